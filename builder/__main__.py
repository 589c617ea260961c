"""`python -m builder …`, and `accelerate launch -m builder train …` on several GPUs."""

from builder.cli import main

main()
