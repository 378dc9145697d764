"""The web app of ``medharness view``: Gradio over the viewer's selections (``viewer.py``).

A filtered view is also a link: ``/?task=medqa_4opt&show=models+disagree&group=...&sort=...``
opens with those filters applied; ``/?task=medqa_4opt&doc=ID`` opens one question. The
playground tab exists only when the caller passes one; this module never loads a model.
Nothing leaves the machine: Gradio's analytics are off and the theme uses the system's
fonts, not a font service.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Protocol

from medharness.core.errors import UserError
from medharness.reports.viewer import ALL, Viewer, render

DOCUMENT_ORDER = "document order"
CSS = """
#samples pre { white-space: pre-wrap; margin: 0.2em 0; font-size: 0.9em; }
#samples table.answers { width: 100%; table-layout: fixed; border-collapse: collapse; }
#samples td, #samples th { vertical-align: top; border: 1px solid #ddd; padding: 0.4em; }
#samples section.sample { margin-bottom: 1.5em; }
#samples .metrics { color: #555; font-size: 0.85em; }
"""


class Asker(Protocol):
    """What the playground tab needs: the models' names, and their answers as they grow."""

    @property
    def models(self) -> list[str]: ...

    def ask(self, question: str) -> Iterator[list[str]]: ...


def gradio() -> Any:
    """Gradio, with its analytics off; one clear line where the extra is not installed."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise UserError(
            "medharness view needs Gradio: pip install 'medharness-eval[view]'"
        ) from None
    return gradio


def build_app(viewer: Viewer, playground: Asker | None = None) -> Any:
    """The Blocks of the viewer (and the playground tab when one is given)."""
    gr = gradio()
    first = viewer.tasks[0]

    def controls(task: str, outcome: str, group: str, sort: str) -> list[Any]:
        """The filters' choices for ``task``, keeping the asked values where they exist."""
        outcomes, groups = viewer.outcomes(task), viewer.groups(task)
        sorts = [DOCUMENT_ORDER, *viewer.measures(task)]
        return [
            gr.update(choices=outcomes, value=outcome if outcome in outcomes else ALL),
            gr.update(choices=groups, value=group if group in groups else ALL),
            gr.update(choices=sorts, value=sort if sort in sorts else DOCUMENT_ORDER),
        ]

    def samples(task: str, outcome: str, group: str, sort: str) -> str:
        if task not in viewer.tasks:
            return render([])
        outcome = outcome if outcome in viewer.outcomes(task) else ALL
        group = group if group in viewer.groups(task) else ALL
        measure = None if sort in (DOCUMENT_ORDER, None) else sort
        return render(viewer.select(task, outcome, group, measure), len(viewer.samples(task)))

    def chosen(task: str) -> list[Any]:
        """Another task: its filters from the start, and its samples."""
        return [*controls(task, ALL, ALL, DOCUMENT_ORDER), samples(task, ALL, ALL, DOCUMENT_ORDER)]

    def opened(request: Any) -> list[Any]:
        asked = dict(request.query_params) if request is not None else {}
        task = asked.get("task", first)
        task = task if task in viewer.tasks else first
        wanted = [asked.get("show", ALL), asked.get("group", ALL), asked.get("sort", "")]
        updates = controls(task, *wanted)
        values = [update["value"] for update in updates]
        doc = asked.get("doc")  # one question, as the gate's list of flipped ones links it
        shown = samples(task, *values) if doc is None else render(viewer.select(task, doc_id=doc))
        return [gr.update(value=task), *updates, shown]

    with gr.Blocks(title="medharness view", analytics_enabled=False) as app:
        with gr.Tab("Samples"):
            with gr.Row():
                task = gr.Dropdown(viewer.tasks, value=first, label="Task")
                outcome = gr.Dropdown(viewer.outcomes(first), value=ALL, label="Show")
                group = gr.Dropdown(viewer.groups(first), value=ALL, label="Group")
                sort = gr.Dropdown(
                    [DOCUMENT_ORDER, *viewer.measures(first)],
                    value=DOCUMENT_ORDER,
                    label="Sort by the largest difference between models in",
                )
            shown = gr.HTML(elem_id="samples")
        filters = [task, outcome, group, sort]
        task.input(chosen, task, [outcome, group, sort, shown])
        for control in (outcome, group, sort):
            control.input(samples, filters, shown)
        # Gradio hands the request (and the link's query) to a parameter typed gr.Request;
        # this module imports Gradio late, so the type is set here rather than as text
        opened.__annotations__["request"] = gr.Request
        app.load(opened, None, [*filters, shown])
        if playground is not None:
            playground_tab(gr, playground)
    return app


def playground_tab(gr: Any, playground: Asker) -> None:
    """A question box and every model's answer beside the others, streamed."""
    with gr.Tab("Playground"):
        question = gr.Textbox(label="Question", lines=3, elem_id="question")
        ask = gr.Button("Ask every model", variant="primary", elem_id="ask")
        with gr.Row():
            answers = [
                gr.Textbox(label=name, lines=12, interactive=False, elem_id=f"answer-{i}")
                for i, name in enumerate(playground.models)
            ]

        def answer(text: str) -> Iterator[list[str]]:
            if text.strip():
                yield from playground.ask(text)

        ask.click(answer, question, answers)
        question.submit(answer, question, answers)


def serve(viewer: Viewer, host: str, port: int, playground: Asker | None = None) -> None:
    """Serve until interrupted."""
    gr = gradio()
    theme = gr.themes.Default(
        font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    app = build_app(viewer, playground)
    print(f"medharness view on http://{host}:{port}/ (Ctrl+C stops it)", flush=True)
    try:
        app.queue().launch(
            server_name=host, server_port=port, theme=theme, css=CSS, quiet=True, show_error=True
        )
    except OSError as exc:
        raise UserError(f"cannot serve on {host}:{port}: {exc}") from None
