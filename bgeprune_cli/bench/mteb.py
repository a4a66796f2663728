"""Optional MTEB tasks for `bgeprune bench --mteb TASKS`, through the `mteb` package (>= 2).

MTEB downloads each task's data from the Hugging Face hub, so it needs the package and a network
that reaches the hub; without either, the error says which and what to do. Models are loaded as
sentence-transformers models, so a run's non-exported pruned model is skipped (export it first).

Example:
    pip install mteb && bgeprune bench out/bge-m3-50pct --compare BAAI/bge-m3 --mteb STS22.v2,SciFact
"""

from __future__ import annotations

import importlib.util

from ..errors import EnvironmentProblem


def run_mteb(models: dict, task_names: list[str]) -> dict:
    if importlib.util.find_spec("mteb") is None:
        raise EnvironmentProblem("--mteb needs the mteb package: `pip install 'mteb>=2'` (its task data comes "
                                 "from the Hugging Face hub, so the machine must reach it). For offline quality "
                                 "numbers use --beir DIR and --bitext FILE instead.")
    import mteb
    from sentence_transformers import SentenceTransformer

    try:
        tasks = mteb.get_tasks(tasks=task_names)
    except Exception as exc:  # unknown task names
        raise EnvironmentProblem(f"mteb does not know the task(s) {task_names}: {exc}") from None
    scores: dict = {"tasks": task_names}
    for name, bench_model in models.items():
        if bench_model.backend != "torch":
            scores[name] = {"skipped": "MTEB runs sentence-transformers' PyTorch model; other backends are skipped"}
            continue
        if bench_model.kind == "pruned-model":
            scores[name] = {"skipped": "a run's pruned model is not a sentence-transformers model; export it"}
            continue
        st_model = SentenceTransformer(str(bench_model.directory), device=bench_model.device)
        try:
            results = mteb.evaluate(st_model, tasks=tasks)
        except Exception as exc:  # data download, mostly
            raise EnvironmentProblem(f"MTEB could not run {task_names} for {bench_model.spec} "
                                     f"({exc.__class__.__name__}: {str(exc)[:200]}); MTEB needs the Hugging Face "
                                     f"hub for task data.") from None
        scores[name] = {r.task_name: float(r.get_score()) for r in results.task_results}
    if "base" in scores and "model" in scores and "skipped" not in scores["model"]:
        scores["ratio"] = {t: scores["model"][t] / scores["base"][t] for t in scores["model"]
                           if scores["base"].get(t)}
    return scores
