"""`python -m builder …`, and `accelerate launch -m builder train …` on several GPUs."""

from builder.app.cli import main

main()
