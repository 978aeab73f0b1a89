"""The portal's own HTML pages (the task page itself comes from templates.render_task).

Every value that is not a literal of this module goes through `esc`, so labels, job names,
instructions and worker names always render as text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem;color:#222}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:left}
.bar{background:#eee;width:10rem;height:.7rem;display:inline-block}.bar>span{background:#3a7;height:100%;display:block}
.muted{color:#666}.notice{background:#fff6d5;padding:.6rem 1rem}
"""
_CROWD_FORM = re.compile(r"<crowd-form\b[^>]*>")


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: str) -> str:
    """A whole page; `body` must be HTML built with `esc`."""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style>'
        f"</head><body>{body}</body></html>"
    )


def message_page(title: str, message: str, link: tuple[str, str] | None = None) -> str:
    more = f'<p><a href="{esc(link[0])}">{esc(link[1])}</a></p>' if link else ""
    return page(title, f"<h1>{esc(title)}</h1><p>{esc(message)}</p>{more}")


def with_hidden_fields(task_html: str, fields: dict[str, str]) -> str:
    """The rendered task page with hidden inputs inside its `<crowd-form>`, posted with the answer."""
    inputs = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in fields.items())
    match = _CROWD_FORM.search(task_html)
    if match is None:
        raise ValueError("the task page has no <crowd-form>")
    return task_html[: match.end()] + inputs + task_html[match.end() :]


def no_more_tasks_page(worker_name: str) -> str:
    return page(
        "No more tasks",
        f"<h1>No more tasks</h1><p>Thank you, {esc(worker_name)}: there is nothing left for you to label "
        "right now. Come back later, or close this page.</p>",
    )


def preview_page(header: str, short_instructions_html: str, image_url: str | None) -> str:
    """MTurk's preview (before the worker accepts the HIT): the instructions and a sample image.

    `short_instructions_html` is safe HTML made by templates.instructions_html.
    """
    image = (
        f'<p><img src="{esc(image_url)}" alt="sample image" style="max-width:40rem"></p>' if image_url else ""
    )
    return page(
        header,
        f'<h1>{esc(header)}</h1><p class="notice">Preview: accept the HIT to start drawing boxes.</p>'
        f"{short_instructions_html}{image}",
    )


def mturk_return_page(submit_url: str, assignment_id: str, nonce: str) -> str:
    """Posts the assignment back to MTurk (`externalSubmit`) as soon as it loads."""
    return page(
        "Submitting to Mechanical Turk",
        f'<form id="done" method="post" action="{esc(submit_url)}">'
        f'<input type="hidden" name="assignmentId" value="{esc(assignment_id)}">'
        '<input type="hidden" name="labeljob" value="submitted">'
        "<p>Thank you, your answer is stored. <button>Return to Mechanical Turk</button></p></form>"
        f'<script nonce="{esc(nonce)}">document.getElementById("done").submit()</script>',
    )


def _csrf_form(action: str, csrf: str, button: str) -> str:
    return (
        f'<form method="post" action="{esc(action)}"><input type="hidden" name="csrf" value="{esc(csrf)}">'
        f"<button>{esc(button)}</button></form>"
    )


def _bar(done: int, total: int) -> str:
    share = done / total if total else 0.0
    return f'<span class="bar"><span style="width:{share * 100:.1f}%"></span></span> {done}/{total}'


def _table(headers: list[str], rows: Iterable[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def admin_jobs_page(jobs: list[dict]) -> str:
    """jobs: name, status, objects, complete, answers, wanted, live_leases, workers."""
    rows = [
        [
            f'<a href="/admin/jobs/{esc(j["name"])}">{esc(j["name"])}</a>',
            esc(j["status"]),
            _bar(j["complete"], j["objects"]),
            _bar(j["answers"], j["wanted"]),
            esc(j["live_leases"]),
            esc(j["workers"]),
        ]
        for j in jobs
    ]
    table = _table(["job", "status", "objects complete", "answers", "open leases", "workers"], rows)
    return page("labeljob portal", f"<h1>Jobs</h1>{table if jobs else '<p>No jobs yet.</p>'}")


def admin_job_page(job: dict, workers: list[dict], files: list[tuple[str, str]], csrf: str) -> str:
    """One job: progress, per-worker statistics (with gold scores and blocks), outputs and the stop button.

    files: (name, download path) or, for a folder, (name, its URI), shown as text.
    """
    name = esc(job["name"])
    agreement = any(w.get("recall") is not None for w in workers)
    gold = any("gold" in w for w in workers)
    headers = ["worker", "name", "source", "answers", "median s/task", "mean s/task"]
    headers += ["recall", "precision", "mean IoU", "weight", "low quality"] if agreement else []
    headers += ["gold", "blocked"] if gold else []
    rows = []
    for w in workers:
        row = [
            esc(w["worker_id"]),
            esc(w["name"]),
            esc(w["source"]),
            esc(w["answers"]),
            esc(w["median_seconds"]),
            esc(w["mean_seconds"]),
        ]
        if agreement:
            row += [esc(w.get(k, "")) for k in ("recall", "precision", "mean_iou", "weight", "low_quality")]
        if gold:
            row += [esc(w.get("gold", "")), esc(w.get("blocked", ""))]
        rows.append(row)
    links = "".join(
        f"<li>{esc(label)}: {esc(target)}</li>"
        if "://" in target
        else f'<li><a href="{esc(target)}">{esc(label)}</a></li>'
        for label, target in files
    )
    stop = _csrf_form(f"/admin/jobs/{name}/stop", csrf, "Stop this job") if job["status"] == "open" else ""
    note = (
        ""
        if agreement
        else '<p class="muted">Agreement with the consensus appears here once the job is finished.</p>'
    )
    return page(
        job["name"],
        f'<p><a href="/admin">All jobs</a></p><h1>{name}</h1>'
        f"<p>Status: {esc(job['status'])}. Objects complete: {_bar(job['complete'], job['objects'])}. "
        f"Answers: {_bar(job['answers'], job['wanted'])}.</p>{stop}"
        f"<h2>Workers</h2>{_table(headers, rows) if workers else '<p>No answers yet.</p>'}{note}"
        f'<h2>Outputs</h2><p><a href="/review/{name}/">Review and adjudicate the boxes</a></p>'
        f"<ul>{links or '<li class=muted>None yet: the job has not been finished by a poll.</li>'}</ul>",
    )
