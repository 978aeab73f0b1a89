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


def hidden_inputs(fields: dict[str, str]) -> str:
    return "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in fields.items())


def with_hidden_fields(task_html: str, fields: dict[str, str], notice: str | None = None) -> str:
    """The rendered task page with hidden inputs inside its `<crowd-form>`, posted with the answer,
    and `notice` (text) shown above the task."""
    match = _CROWD_FORM.search(task_html)
    if match is None:
        raise ValueError("the task page has no <crowd-form>")
    shown = f'<p class="notice" role="status">{esc(notice)}</p>' if notice else ""
    return (
        task_html[: match.start()]
        + shown
        + task_html[match.start() : match.end()]
        + hidden_inputs(fields)
        + task_html[match.end() :]
    )


def invite_page(worker_name: str, action: str) -> str:
    """An invite link's page: one button that signs this browser in as the invited worker."""
    return page(
        "Start labeling",
        f"<h1>Welcome, {esc(worker_name)}</h1><p>This link works once: it signs this browser in, and "
        "you come back later with the same browser.</p>"
        f'<form method="post" action="{esc(action)}"><button>Start labeling</button></form>',
    )


def task_actions(skip_action: str, hidden: dict[str, str], seconds_left: float) -> str:
    """Below the task: how long the image is held, and buttons to skip it or report it broken."""
    seconds = max(0, int(seconds_left))
    minutes = seconds // 60
    unit = "minute" if minutes == 1 else "minutes"
    # The text is for a page without scripts; lease-timer.js turns it into a live countdown.
    return (
        f'<p class="lease" data-seconds-left="{seconds}">This image is held for you for {minutes} more '
        f"{unit}; after that it goes back to the pool and an answer is not stored.</p>"
        '<script src="/static/lease-timer.js"></script>'
        "<style>.lease.warning{color:#b00020;font-weight:600}</style>"
        f'<form method="post" action="{esc(skip_action)}">{hidden_inputs(hidden)}'
        '<button name="reason" value="skip">Skip this image</button> '
        '<button name="reason" value="not_loading">The image does not load</button> '
        '<button name="reason" value="not_an_image">Not an image</button></form>'
    )


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


def _post_button(action: str, fields: dict[str, str], label: str) -> str:
    """A one-button form posting `fields` (its CSRF token among them) to `action`."""
    return (
        f'<form method="post" action="{esc(action)}">{hidden_inputs(fields)}'
        f"<button>{esc(label.capitalize())}</button></form>"
    )


def _bar(done: int, total: int) -> str:
    share = done / total if total else 0.0
    return f'<span class="bar"><span style="width:{share * 100:.1f}%"></span></span> {done}/{total}'


def _table(headers: list[str], rows: Iterable[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def admin_jobs_page(jobs: list[dict], csrf: str = "") -> str:
    """jobs: name, status, objects, complete, answers, wanted, live_leases, workers, awaiting_approval;
    and the invite form."""
    rows = [
        [
            f'<a href="/admin/jobs/{esc(j["name"])}">{esc(j["name"])}</a>',
            esc(j["status"]),
            _bar(j["complete"], j["objects"]),
            _bar(j["answers"], j["wanted"]),
            esc(j["live_leases"]),
            esc(j["workers"]),
            esc(j["awaiting_approval"]),
        ]
        for j in jobs
    ]
    headers = ["job", "status", "objects complete", "answers", "open leases", "workers", "awaiting approval"]
    table = _table(headers, rows)
    return page(
        "labeljob portal",
        f"<h1>Jobs</h1>{table if jobs else '<p>No jobs yet.</p>'}{_invite_form(jobs, csrf)}",
    )


def _invite_form(jobs: list[dict], csrf: str) -> str:
    options = "".join(f'<option value="{esc(j["name"])}">{esc(j["name"])}</option>' for j in jobs)
    return (
        f'<h2>Invite a worker</h2><form method="post" action="/admin/invite">{hidden_inputs({"csrf": csrf})}'
        '<label>Name <input name="name" required maxlength="256"></label> '
        f'<label>Job <select name="job"><option value="">any open job</option>{options}</select></label> '
        "<button>Make a one-time link</button></form>"
    )


def invite_made_page(name: str, link: str) -> str:
    """The new invite link, shown once: only its hash is stored."""
    return page(
        "Invite link",
        f"<h1>Invite link for {esc(name)}</h1><p>Send this link to {esc(name)}; it works once, for 7 "
        f"days, and is not shown again:</p><p><code>{esc(link)}</code></p>"
        '<p><a href="/admin">Back to the jobs</a></p>',
    )


def admin_job_page(job: dict, workers: list[dict], files: list[tuple[str, str]], csrf: str) -> str:
    """One job: progress, per-worker statistics (with gold scores and blocks), outputs and the stop button.

    files: (name, download path) or, for a folder, (name, its URI), shown as text.
    """
    name = esc(job["name"])
    agreement = any(w.get("recall") is not None for w in workers)
    gold = any("gold" in w for w in workers)
    headers = ["worker", "name", "source", "answers", "median s/task", "mean s/task"]
    headers += ["recall", "precision", "mean IoU", "weight", "low quality"] if agreement else []
    headers += ["gold"] if gold else []
    headers.append("blocked")
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
            row.append(esc(w.get("gold", "")))
        action = "unblock" if job["name"] in w["blocked"] else "block"
        block = "".join(
            _post_button(
                f"/admin/jobs/{name}/block", {"csrf": csrf, "worker": w["worker_id"], "action": value}, label
            )
            for value, label in ((action, action), ("drop", "block and drop answers"))
        )
        revoke = _post_button("/admin/revoke", {"csrf": csrf, "worker": w["worker_id"]}, "revoke")
        reason = f" ({w['block_reason']})" if w.get("block_reason") else ""
        row.append(esc(", ".join(w["blocked"]) + reason) + block + revoke)
        rows.append(row)
    links = "".join(
        f"<li>{esc(label)}: {esc(target)}</li>"
        if "://" in target
        else f'<li><a href="{esc(target)}">{esc(label)}</a></li>'
        for label, target in files
    )
    stop = (
        _post_button(f"/admin/jobs/{name}/stop", {"csrf": csrf}, "stop this job")
        if job["status"] == "open"
        else ""
    )
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
        f"{_set_aside(job.get('set_aside', []))}"
        f'<h2>Outputs</h2><p><a href="/review/{name}/">Review and adjudicate the boxes</a></p>'
        f"<ul>{links or '<li class=muted>None yet: the job has not been finished by a poll.</li>'}</ul>",
    )


def _set_aside(tasks: list[dict]) -> str:
    if not tasks:
        return ""
    rows = [[esc(t["object_id"]), esc(t["source_ref"]), esc(t["reports"])] for t in tasks]
    return (
        "<h2>Set aside</h2><p>Workers reported these images as not loading or not an image; no worker "
        "is offered them any more.</p>" + _table(["object", "source-ref", "reports"], rows)
    )


def marketplace_done_page(
    done: int, next_action: str, hidden: dict[str, str], finish_url: str | None, code: str | None
) -> str:
    """After a marketplace worker's answer: progress, the next image, and how to finish.

    `finish_url` is the marketplace's completion address set by the ML lead (never one from the
    request); `code` is the completion code, shown so the worker can paste it if they must.
    """
    fields = hidden_inputs(hidden)
    finish = (
        f'<p><a href="{esc(finish_url)}">Finish and return to the marketplace</a></p>' if finish_url else ""
    )
    shown = f"<p>Your completion code: <strong>{esc(code)}</strong></p>" if code else ""
    return page(
        "Answer stored",
        f"<h1>Thank you: your answer is stored</h1><p>Images done in this session: {done}.</p>"
        f'<form method="post" action="{esc(next_action)}">{fields}<button>Next image</button></form>'
        f"{finish}{shown}",
    )
