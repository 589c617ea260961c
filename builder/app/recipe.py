"""`builder run recipes/<name>.yaml`: the whole self-rewarding loop from one file.

    base (M0) ─[make-eft]─ mix-sft ─ train sft (M1) ─ per iteration: make-prompts ─ make-pairs ─ train dpo (M2, M3…)

An iteration with a `meta_judge:` section (make-judge-pairs' options) is Meta-Rewarding's: after make-pairs, the
model meta-judges that version's judgments, and the iteration's DPO trains on both versions at once, the actor
pairs and the judge pairs (their rows concatenated; the model's lineage names both).

`sft: null` skips the seed SFT: the first iteration starts from the base, which is then its own M0 policy and judge
(a loop driven by verifiers needs no EFT-trained judge to get labels the verifiers can tell apart).

An iteration may compose verifiable instructions instead of self-instructing (`make_verifiable:`), and a
`judge_gate:` measures each iteration's judge with `eval judge` before its make-pairs (on the iteration's
verifiable eval split, or the gate's own `prompts`), records the figures in the judge model's lineage, and
warns, or stops the recipe, when the judge's 95% interval includes chance (0.5). An `eval_follow:` section ends
the recipe with `eval follow` on the base and every model it made (on the last verifiable eval split, or its own
`prompts`): each one's share of instructions followed, and its difference from the base.

A recipe's settings are the fields of the stage configs themselves (MakeEftConfig, MixSftConfig, TrainConfig,
MakePromptsConfig, MakePairsConfig), so a recipe can say whatever the command line can, and a misspelt or
mistyped key fails before any work starts, with its key path. Every step is content-addressed (a version's id
hashes what decides it; a model remembers the identity it was trained with), so running a recipe again finds
the finished steps and skips them, and a killed step continues from the generation cache or its last
checkpoint. The recipe's hash is recorded in every artefact a run makes but is not part of any id: adding an
iteration to a recipe reuses everything before it.
"""

import json
import time
import typing
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import yaml

from builder.core.errors import BuilderError
from builder.core.progress import console
from builder.core.records import file_sha256
from builder.core.store import Store, now
from builder.engines.models import DEFAULT_MODEL
from builder.stages.configs import (
    ImportOasstConfig,
    MakeEftConfig,
    MakeJudgePairsConfig,
    MakePairsConfig,
    MakePromptsConfig,
    MakeVerifiableConfig,
    MixSftConfig,
)
from evaluators.configs import FollowConfig, JudgeAccuracyConfig
from trainers.configs import METHOD_DEFAULTS, TrainConfig

GENERATION_KEYS = ("backend", "batch_size", "dtype")  # `generation:` settings, shared by every step that generates
TOP_LEVEL = {"name", "base", "seed", "judge_template", "generation", "import_oasst", "seed_data", "ift_sft", "make_eft", "mix_sft", "sft",
             "iteration", "iterations", "judge_gate", "eval_follow"}
SEED_DATA = {"ift", "ranked", "eft"}
ITERATION_STEPS = ("make_prompts", "make_verifiable", "make_pairs", "meta_judge", "dpo")
GATE_ACTIONS = ("stop", "warn")


class GateStopped(BuilderError):
    """A judge gate with `action: stop` found a judge whose interval includes chance; the recipe ends here."""

    def __init__(self, message: str, version_id: str):
        super().__init__(message)
        self.version_id = version_id
        self.rows: list[dict] = []
TRAINING_KEYS = {f.name for f in fields(TrainConfig)} - {"method", "base", "data", "name"}  # the rest the loop wires


@dataclass(frozen=True)
class From:
    """A value that is the output of an earlier step, known only once that step has run."""

    step: str

    def __str__(self) -> str:
        return f"<{self.step}>"

    __repr__ = __str__  # in a tuple of data versions too


@dataclass(frozen=True)
class Step:
    label: str  # "M2 make-pairs": unique within a recipe
    kind: str  # make-eft | mix-sft | train | make-prompts | make-pairs | make-judge-pairs | …
    config: type
    settings: dict  # the config's fields; From values are filled in at run time
    where: str  # the recipe key that configures it, for error messages
    produces_model: str | None = None
    action: str | None = None  # judge gates: stop | warn


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    sha256: str
    text: str
    steps: list[Step]

    def provenance(self) -> dict:
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256}


def load_recipe(path: str | Path, store: Store) -> Recipe:
    """Parse, check every key and type, and plan the steps; raises BuilderError naming the key path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
    except OSError:
        raise BuilderError(f"recipe {path}: no such file") from None
    except UnicodeDecodeError:
        raise BuilderError(f"recipe {path}: not UTF-8 text") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise BuilderError(f"recipe {path}: not valid YAML" + (f" (line {mark.line + 1})" if mark else "")) from None
    try:
        steps = plan(_mapping(raw, "recipe", TOP_LEVEL), store)
    except BuilderError as error:
        raise BuilderError(f"recipe {path}: {error}") from None
    name = raw.get("name") or path.stem
    return Recipe(str(name), path.resolve(), file_sha256(path), text, steps)


def plan(raw: dict, store: Store) -> list[Step]:
    """The steps in order; every file, version and model named must exist now or be made by an earlier step."""
    base = _known_model(_typed(raw.get("base"), str | None, "base") or DEFAULT_MODEL, "base", store, set())
    common = {"seed": _typed(raw.get("seed", 0), int, "seed"),
              "judge_template": _typed(raw.get("judge_template"), str | None, "judge_template")}
    if common["judge_template"] is not None and not Path(common["judge_template"]).expanduser().exists():
        raise BuilderError(f"judge_template: no such file or judge folder {common['judge_template']!r}")
    generation = _mapping(raw.get("generation") or {}, "generation", set(GENERATION_KEYS))
    seed_data = {k: _existing_data(_typed(v, str | None, f"seed_data.{k}"), f"seed_data.{k}", store)
                 for k, v in _mapping(raw.get("seed_data") or {}, "seed_data", SEED_DATA).items()}
    shared = {**common, **generation}
    steps: list[Step] = []

    if raw.get("import_oasst") is not None:
        path = _typed(_mapping(raw["import_oasst"], "import_oasst", None).get("path"), str, "import_oasst.path")
        _existing_data(path, "import_oasst.path", store)
        steps.append(_step("import-oasst", "import-oasst", ImportOasstConfig, "import_oasst", raw["import_oasst"], shared, {}))
        seed_data = {"ift": From("import-oasst"), "ranked": From("import-oasst")} | {k: v for k, v in seed_data.items() if v}
    eft = seed_data.get("eft")
    judge = base
    if raw.get("ift_sft") is not None:  # the paper: EFT is labelled by a model SFT-trained on IFT data only
        if raw.get("make_eft") is None:
            raise BuilderError("ift_sft: it trains the model that labels make_eft's data; add a make_eft section")
        ift_sft = _mapping(raw["ift_sft"], "ift_sft", TRAINING_KEYS | {"name"})
        judge = _typed(ift_sft.get("name"), str, "ift_sft.name")
        steps.append(_step("ift mix-sft", "mix-sft", MixSftConfig, "mix_sft", raw.get("mix_sft") or {}, shared,
                           {"ift": seed_data.get("ift"), "eft": None, "ift_only": True}))
        steps.append(_training_step(judge, "sft", "ift_sft", ift_sft, base, From("ift mix-sft"), common["seed"]))
    if raw.get("make_eft") is not None:
        steps.append(_step(f"{'M0' if judge == base else judge} make-eft", "make-eft", MakeEftConfig, "make_eft", raw["make_eft"], shared,
                           {"ranked": seed_data.get("ranked"), "model": judge}))
        eft = From(steps[-1].label)
    if "sft" in raw and raw["sft"] is None:  # no seed SFT: the first iteration starts from the base
        first = base
    else:
        steps.append(_step("mix-sft", "mix-sft", MixSftConfig, "mix_sft", raw.get("mix_sft") or {}, shared,
                           {"ift": seed_data.get("ift"), "eft": eft}))
        sft = _mapping(raw.get("sft"), "sft", TRAINING_KEYS | {"name"})
        first = _typed(sft.get("name"), str, "sft.name")
        if first == judge:
            raise BuilderError(f"sft.name: {first!r} is already the name of the IFT-only model (ift_sft.name)")
        steps.append(_training_step(first, "sft", "sft", sft, base, From("mix-sft"), common["seed"]))

    steps += iteration_steps(raw, first, shared, seed_data.get("ift"), store)
    return steps + eval_steps(raw, base, steps, shared, store)


def eval_steps(raw: dict, base: str, steps: list[Step], shared: dict, store: Store) -> list[Step]:
    """`eval_follow:`: eval follow on the base and every model the recipe made, in the order made."""
    if raw.get("eval_follow") is None:
        return []
    section = dict(_mapping(raw["eval_follow"], "eval_follow", _keys(FollowConfig) - {"policies"}))
    prompts = _existing_data(_typed(section.pop("prompts", None), str | None, "eval_follow.prompts"), "eval_follow.prompts", store)
    verifiable = [From(step.label) for step in steps if step.kind == "make-verifiable"]
    if prompts is None and not verifiable:
        raise BuilderError("eval_follow: no make_verifiable step gives it an eval split; give eval_follow.prompts")
    policies = (base, *(step.produces_model for step in steps if step.produces_model))
    return [_step("eval follow", "eval-follow", FollowConfig, "eval_follow", section, shared,
                  {"policies": policies, "prompts": prompts or verifiable[-1]})]


def iteration_steps(raw: dict, first: str, shared: dict, seed_prompts, store: Store) -> list[Step]:
    """[make-prompts or make-verifiable] → [judge gate] → make-pairs → DPO for each entry of `iterations`, each on
    the model the one before made."""
    allowed = {"make_prompts": _keys(MakePromptsConfig), "make_verifiable": _keys(MakeVerifiableConfig),
               "make_pairs": _keys(MakePairsConfig) - {"model", "prompts"}, "meta_judge": _keys(MakeJudgePairsConfig) - {"pairs"},
               "dpo": TRAINING_KEYS}
    given_shared = _mapping(raw.get("iteration") or {}, "iteration", set(ITERATION_STEPS))
    shared_iteration = {step: _mapping(given_shared.get(step) or {}, f"iteration.{step}", allowed[step]) for step in ITERATION_STEPS}
    gate, action = judge_gate(raw.get("judge_gate"), store)
    iterations = raw.get("iterations") or []
    if not isinstance(iterations, list):
        raise BuilderError(f"iterations: expected a list, got {type(iterations).__name__}")
    steps: list[Step] = []
    policy, names = first, {first}
    for i, entry in enumerate(iterations):
        where = f"iterations[{i}]"
        entry = _mapping(entry, where, {"name", "prompts", *ITERATION_STEPS})
        name = _typed(entry.get("name"), str, f"{where}.name")
        if name in names:
            raise BuilderError(f"{where}.name: {name!r} is already the name of an earlier model")
        merged = {step: shared_iteration[step] | _mapping(entry.get(step) or {}, f"{where}.{step}", allowed[step]) for step in ITERATION_STEPS}
        prompts = _existing_data(_typed(entry.get("prompts"), str | None, f"{where}.prompts"), f"{where}.prompts", store)
        judge = _known_model(merged["make_pairs"].get("judge"), f"{where}.make_pairs.judge", store, names) or policy
        verifiable = None
        if prompts is None and ("make_verifiable" in given_shared or "make_verifiable" in entry):
            steps.append(_step(f"{name} make-verifiable", "make-verifiable", MakeVerifiableConfig, f"{where}.make_verifiable",
                               merged["make_verifiable"], shared, {}))
            prompts = verifiable = From(steps[-1].label)
        elif prompts is None:
            chosen = merged["make_prompts"]
            wired = {"model": _known_model(chosen.pop("model", None), f"{where}.make_prompts.model", store, names) or policy,
                     "seed_prompts": _existing_data(chosen.pop("seed_prompts", None), f"{where}.make_prompts.seed_prompts", store)
                     or seed_prompts}
            steps.append(_step(f"{name} make-prompts", "make-prompts", MakePromptsConfig, f"{where}.make_prompts",
                               merged["make_prompts"], shared, wired))
            prompts = From(steps[-1].label)
        if gate is not None:
            wired = {"judge": judge, "policy": policy, "prompts": gate.get("prompts") or verifiable}
            gate_step = _step(f"{name} judge gate", "judge-gate", JudgeAccuracyConfig, "judge_gate", {k: v for k, v in gate.items() if k != "prompts"},
                              shared, wired)
            steps.append(Step(gate_step.label, gate_step.kind, gate_step.config, gate_step.settings, gate_step.where, action=action))
        steps.append(_step(f"{name} make-pairs", "make-pairs", MakePairsConfig, f"{where}.make_pairs", merged["make_pairs"], shared,
                           {"model": policy, "prompts": prompts}))
        data = (From(steps[-1].label),)
        if "meta_judge" in given_shared or "meta_judge" in entry:  # Meta-Rewarding: judge pairs too, trained on with the actor's
            chosen = dict(merged["meta_judge"])
            meta = _known_model(chosen.pop("model", None), f"{where}.meta_judge.model", store, names) or judge
            steps.append(_step(f"{name} make-judge-pairs", "make-judge-pairs", MakeJudgePairsConfig, f"{where}.meta_judge", chosen,
                               shared, {"pairs": data[0], "model": meta}))
            data += (From(steps[-1].label),)
        steps.append(_training_step(name, "dpo", f"{where}.dpo", merged["dpo"], policy, data, shared["seed"]))
        policy = name
        names.add(name)
    return steps


def judge_gate(raw, store: Store) -> tuple[dict | None, str | None]:
    """The `judge_gate:` settings (eval judge's options, less the judge and policy the loop wires) and its action."""
    if raw is None:
        return None, None
    gate = dict(_mapping(raw, "judge_gate", (_keys(JudgeAccuracyConfig) - {"judge", "policy"}) | {"action"}))
    action = gate.pop("action", "warn")
    if action not in GATE_ACTIONS:
        raise BuilderError(f"judge_gate.action: expected one of {', '.join(GATE_ACTIONS)}, got {action!r}")
    gate["prompts"] = _existing_data(_typed(gate.get("prompts"), str | None, "judge_gate.prompts"), "judge_gate.prompts", store)
    return gate, action


def _keys(config: type) -> set[str]:
    return {f.name for f in fields(config)}


def _training_step(name: str, method: str, where: str, section: dict, base: str, data: From | tuple[From, ...], seed: int) -> Step:
    settings = {**METHOD_DEFAULTS[method], "seed": seed, **{k: v for k, v in section.items() if k != "name"}}
    settings |= {"method": method, "base": base, "data": data, "name": name}
    return _checked(Step(f"{name} train {method}", "train", TrainConfig, settings, where, produces_model=name))


def _step(label: str, kind: str, config: type, where: str, section, shared: dict, wired: dict) -> Step:
    own = _keys(config)
    section = _mapping(section, where, own - set(wired))
    settings = {k: v for k, v in shared.items() if k in own} | section | wired
    return _checked(Step(label, kind, config, settings, where))


def _checked(step: Step) -> Step:
    """Types of every field, then the stage's own validation, with the placeholders of later outputs left alone."""
    hints = typing.get_type_hints(step.config)
    settings = {k: v if _wired(v) else _typed(v, hints[k], f"{step.where}.{k}") for k, v in step.settings.items()}
    missing = [f.name for f in fields(step.config) if f.name not in settings and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise BuilderError(f"{step.where}: missing {', '.join(missing)}")
    config = step.config(**{k: _filled(v, lambda label: f"<{label}>") for k, v in settings.items()})
    if hasattr(config, "validate"):
        try:
            config.validate()
        except BuilderError as error:
            raise BuilderError(f"{step.where}: {error}") from None
    return Step(step.label, step.kind, step.config, settings, step.where, step.produces_model)


def _existing_data(spec: str | None, where: str, store: Store) -> str | None:
    if spec is not None and not (spec.startswith("hf:") or Path(spec).expanduser().exists() or store.find(spec, missing_ok=True)):
        raise BuilderError(f"{where}: {spec!r} is no file, folder, version in {store.root} or hf: dataset")
    return spec


def _known_model(spec: str | None, where: str, store: Store, made: set[str]) -> str | None:
    if spec is not None and spec not in made and not _model_exists(spec, store):
        raise BuilderError(f"{where}: unknown model {spec!r} (not a folder, a registered or earlier model, or a Hub id)")
    return spec


def _model_exists(spec: str, store: Store) -> bool:
    return (spec.lower() == DEFAULT_MODEL or Path(spec).expanduser().is_dir() or (store.root / "models" / spec).is_dir()
            or ("/" in spec and not spec.startswith((".", "/", "~"))))  # a Hub id: checked when it is loaded


def _mapping(value, where: str, allowed: set[str] | None) -> dict:
    if not isinstance(value, dict):
        raise BuilderError(f"{where}: expected a mapping, got {'nothing' if value is None else type(value).__name__}")
    unknown = sorted(set(value) - allowed) if allowed is not None else []
    if unknown:
        raise BuilderError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(allowed))})")
    return value


def _typed(value, hint, where: str):
    """The value if it has the field's type (an int is a fine float); raises otherwise."""
    if typing.get_origin(hint) is tuple:  # tuple[str, ...]: a list of them
        item = typing.get_args(hint)[0]
        if isinstance(value, list | tuple):
            return tuple(_typed(v, item, f"{where}[{i}]") for i, v in enumerate(value))
        raise BuilderError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
    allowed = typing.get_args(hint) or (hint,)
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if any(t is not type(None) and isinstance(value, t) and (t is bool or not isinstance(value, bool)) for t in allowed):
        return value
    wanted = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise BuilderError(f"{where}: expected {wanted}, got {type(value).__name__} {value!r}")


def _wired(value) -> bool:
    """An earlier step's output, or a tuple of them (an iteration's DPO data)."""
    return isinstance(value, From) or (isinstance(value, tuple) and any(isinstance(v, From) for v in value))


def _filled(value, output):
    """The value with each From replaced by output(step)."""
    if isinstance(value, tuple):
        return tuple(_filled(v, output) for v in value)
    return output(value.step) if isinstance(value, From) else value


def resolved(settings: dict, outputs: dict[str, str]) -> dict:
    return {k: _filled(v, outputs.__getitem__) for k, v in settings.items()}


def run_step(step: Step, outputs: dict[str, str], store: Store) -> tuple[str, bool]:
    """Run one step (or find it done). Returns (its output: a version id or a model name, ran_now)."""
    from builder.stages.eft import make_eft
    from builder.stages.judge_pairs import make_judge_pairs
    from builder.stages.make_pairs import make_pairs
    from builder.stages.seed import import_oasst
    from builder.stages.self_instruct import make_prompts
    from builder.stages.sft_mix import mix_sft
    from builder.stages.verifiable import make_verifiable
    from trainers.train import train

    config = step.config(**resolved(step.settings, outputs))
    if step.kind == "judge-gate":
        return run_gate(step, config, store)
    if step.kind == "eval-follow":
        from evaluators.instruction_following import evaluate_following

        version, built = evaluate_following(config, store)
        return version.id, built
    if step.kind == "import-oasst":
        version, built = import_oasst(config, store)
        return version.id, built
    if step.kind == "train":
        _, trained = train(config, store)
        return config.name, trained
    build = {"make-eft": make_eft, "mix-sft": mix_sft, "make-prompts": make_prompts, "make-pairs": make_pairs,
             "make-judge-pairs": make_judge_pairs, "make-verifiable": make_verifiable}[step.kind]
    version, built = build(config, store)
    return version.id, built


def run_gate(step: Step, config, store: Store) -> tuple[str, bool]:
    """Measure the iteration's judge (eval judge), record it in the judge model's lineage, and warn or stop when
    its 95% interval includes 0.5 (or no pair could be judged)."""
    from builder.core.registry import record_judge_measurement
    from evaluators.judge_accuracy import evaluate_judge, measurement

    version, built = evaluate_judge(config, store)
    measured = measurement(version)
    record_judge_measurement(store, config.judge, measured)
    if measured["accuracy"] is None:
        problem = "no pair of a passing and a failing answer could be judged, so it is not shown to beat chance"
    elif measured["chance_in_interval"]:
        problem = (f"accuracy {100 * measured['accuracy']:.1f}%, 95% interval {100 * measured['low']:.0f}–{100 * measured['high']:.0f}% "
                   f"on {measured['judged_pairs']} {measured['source']} pairs includes chance (50%)")
    else:
        console.print(f"judge gate: {config.judge} passes: accuracy {100 * measured['accuracy']:.1f}% "
                      f"[{100 * measured['low']:.0f}–{100 * measured['high']:.0f}] ({version.id})")
        return version.id, built
    message = f"judge gate ({step.label}): judge {config.judge}: {problem} ({version.id})"
    if step.action == "stop":
        raise GateStopped(message + "; recipe stopped", version.id)
    console.print(f"[yellow]⚠ {message}[/]")
    return version.id, built


def record_run(recipe: Recipe, store: Store, rows: list[dict]) -> Path:
    """The recipe's text, kept by hash, and what this run made of it."""
    folder = store.root / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{recipe.name}-{recipe.sha256[:12]}.yaml").write_text(recipe.text, encoding="utf-8")
    path = folder / f"{recipe.name}-{recipe.sha256[:12]}.json"
    path.write_text(json.dumps({"recipe": recipe.provenance(), "finished_at": now(), "steps": rows}, indent=2))
    return path


def run_recipe(recipe: Recipe, store: Store, on_step=None) -> list[dict]:
    outputs: dict[str, str] = {}
    rows = []
    for i, step in enumerate(recipe.steps, 1):
        if on_step:
            on_step(i, step)
        started = time.perf_counter()
        try:
            output, ran = run_step(step, outputs, store)
        except GateStopped as stop:
            rows.append({"step": step.label, "output": stop.version_id, "ran": True, "seconds": round(time.perf_counter() - started, 1),
                         "stopped": str(stop)})
            stop.rows = rows
            raise
        outputs[step.label] = output
        rows.append({"step": step.label, "output": output, "ran": ran, "seconds": round(time.perf_counter() - started, 1)})
    return rows
