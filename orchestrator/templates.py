"""Render the bounding-box task page for Ground Truth, an MTurk HTMLQuestion or the labeljob portal.

One Liquid file, `task_templates/bounding_box.liquid.html`, serves all three workforces; only the
element script, the image source and the form action differ (docs/architecture.md, "One template, three
workforces"). Every value that comes from a job spec is HTML-escaped here, and so are `{` and `}`:
Ground Truth renders our output once more with its own Liquid, so a label or an instruction
holding `{{ ... }}` must reach it as text, not as code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

import liquid
from markupsafe import Markup, escape

from orchestrator.errors import SpecError
from orchestrator.spec import JobSpec

Target = Literal["groundtruth", "mturk", "portal"]

TEMPLATE_NAME = "bounding_box.liquid.html"
CROWD_ELEMENTS_URL = "https://assets.crowd.aws/crowd-html-elements.js"
PORTAL_ELEMENT_URL = "/static/crowd-bounding-box.js"
# Ground Truth's own per-task Liquid: it presigns each manifest line's source-ref when a worker opens it.
GROUNDTRUTH_IMAGE_SRC = "{{ task.input.taskObject | grant_read_access }}"

_HEADING = re.compile(r"(#{1,6})\s+(.+)")
_IMAGE = re.compile(r"!\[([^\]\n]*)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*:")


def template_file(name: str = TEMPLATE_NAME) -> Traversable:
    """A file of `task_templates/`, from the installed package or else from the source tree.

    The wheel force-includes `task_templates/` as `orchestrator/task_templates/`; a source checkout
    has it next to the `orchestrator/` folder. The portal finds `crowd-bounding-box.js` this way too.
    """
    packaged = resources.files("orchestrator") / "task_templates" / name
    if packaged.is_file():
        return packaged
    source = Path(__file__).resolve().parent.parent / "task_templates" / name
    if source.is_file():
        return source
    raise FileNotFoundError(
        f"task template {name} is neither in the orchestrator package nor in {source.parent}"
    )


def load_template() -> str:
    """The Liquid source of the bounding-box task template."""
    return template_file().read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _compiled() -> liquid.BoundTemplate:
    # StrictUndefined: a variable misspelled in the template fails the render instead of going blank.
    env = liquid.Environment(autoescape=True, undefined=liquid.StrictUndefined)
    return env.from_string(load_template())


def _escape(text: str) -> Markup:
    """HTML-escape `text`, braces included, so it is inert both in a browser and in Ground Truth's Liquid."""
    return Markup(str(escape(text)).replace("{", "&#123;").replace("}", "&#125;"))


def _allowed_image_url(url: str) -> bool:
    # `url` is escaped already, so an entity cannot smuggle in a colon: a scheme here is the real one.
    scheme = _SCHEME.match(url)
    if scheme is None:
        return True
    return scheme.group(0).lower() in ("http:", "https:") or url.lower().startswith("data:image/")


def _bold(text: str) -> str:
    return _BOLD.sub(r"<strong>\1</strong>", text)


def _inline(line: str) -> str:
    """Images and **bold** in one escaped line; bold is not applied inside an image's alt text."""
    parts = []
    end = 0
    for match in _IMAGE.finditer(line):
        parts.append(_bold(line[end : match.start()]))
        alt, url = match.groups()
        parts.append(f'<img src="{url}" alt="{alt}">' if _allowed_image_url(url) else alt)
        end = match.end()
    parts.append(_bold(line[end:]))
    return "".join(parts)


def _blocks(text: str) -> list[tuple[str, list[str]]]:
    """Group lines into ("p", lines), ("ul", items) and ("h1".."h6", [title]) blocks."""
    blocks: list[tuple[str, list[str]]] = []
    open_kind: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        heading = _HEADING.fullmatch(line)
        if not line:
            open_kind = None
        elif heading:
            blocks.append((f"h{len(heading.group(1))}", [heading.group(2)]))
            open_kind = None
        else:
            kind, content = ("ul", line[2:]) if line.startswith("- ") else ("p", line)
            if kind == open_kind:
                blocks[-1][1].append(content)
            else:
                blocks.append((kind, [content]))
                open_kind = kind
    return blocks


def instructions_html(markdown: str) -> tuple[Markup, Markup]:
    """(short, full) instructions as safe HTML from a small Markdown subset.

    Supported: paragraphs (separated by blank lines), `- ` bullet lists, `#` headings, `**bold**`
    and images `![alt](url)` with http(s), relative or `data:image/` URLs (any other image is
    replaced by its alt text). Everything else, raw HTML included, shows as text. Short
    instructions are the first paragraph (everything if there is no paragraph).
    """
    blocks = _blocks(str(_escape(markdown)))  # plain str: Markup would escape our own tags
    rendered = []
    for kind, lines in blocks:
        if kind == "ul":
            rendered.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in lines) + "</ul>")
        elif kind == "p":
            rendered.append("<p>" + "\n".join(_inline(line) for line in lines) + "</p>")
        else:
            rendered.append(f"<{kind}>{_inline(lines[0])}</{kind}>")
    full = "\n".join(rendered)
    short = next((html for (kind, _), html in zip(blocks, rendered, strict=True) if kind == "p"), full)
    return Markup(short), Markup(full)


@dataclass(frozen=True)
class TaskText:
    """The job-level parts of the task page: build once per job, render once per image."""

    header: str
    labels: tuple[str, ...]
    short_instructions_html: Markup
    full_instructions_html: Markup

    @classmethod
    def from_spec(cls, spec: JobSpec) -> TaskText:
        """Header from task.title, instructions from the task.instructions file, else task.description.

        Raises SpecError("task.instructions") when that file cannot be read.
        """
        markdown = spec.task.description
        if spec.task.instructions is not None:
            path = Path(spec.task.instructions)
            try:
                markdown = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise SpecError([("task.instructions", f"file not found: {path}")]) from None
            except (OSError, UnicodeDecodeError) as exc:
                raise SpecError([("task.instructions", f"cannot read {path}: {exc}")]) from None
        short, full = instructions_html(markdown)
        return cls(spec.task.title, tuple(spec.labels), short, full)


def render_task(
    task: JobSpec | TaskText,
    target: Target,
    *,
    image_url: str | None = None,
    form_action: str | None = None,
    initial_value: list[dict] | None = None,
) -> str:
    """The task page as HTML for one workforce.

    - "groundtruth": the UI template to upload for the labeling job. `src` stays Ground Truth's own
      `{{ task.input.taskObject | grant_read_access }}`; give no image_url nor form_action.
    - "mturk": a whole page for an HTMLQuestion's HTMLContent; image_url is required and must be
      https (a presigned URL); `<crowd-form>` posts to MTurk by itself, so no form_action.
    - "portal": a whole page for the labeljob portal, using its offline element script; image_url
      and form_action (where the form posts) are required.

    initial_value: boxes to pre-draw, `[{"label", "left", "top", "width", "height"}]`.
    Raises ValueError when the arguments do not fit the target, SpecError when the instructions
    file is missing.
    """
    text = task if isinstance(task, TaskText) else TaskText.from_spec(task)
    if target == "groundtruth":
        if image_url is not None or form_action is not None:
            raise ValueError("groundtruth: Ground Truth supplies the image and the form; pass neither")
        image_src = Markup(GROUNDTRUTH_IMAGE_SRC)
    elif target == "mturk":
        if image_url is None or not image_url.startswith("https://"):
            raise ValueError("mturk: image_url must be an https URL (MTurk serves HITs over https)")
        if form_action is not None:
            raise ValueError("mturk: crowd-form posts to MTurk by itself; pass no form_action")
        image_src = _escape(image_url)
    elif target == "portal":
        if image_url is None or form_action is None:
            raise ValueError("portal: image_url and form_action are required")
        image_src = _escape(image_url)
    else:
        raise ValueError(f"unknown target {target!r}; expected groundtruth, mturk or portal")
    return _compiled().render(
        standalone=target != "groundtruth",
        element_name="boundingBox" if target == "groundtruth" else "annotatedResult",
        element_script_url=PORTAL_ELEMENT_URL if target == "portal" else CROWD_ELEMENTS_URL,
        image_src=image_src,
        header=_escape(text.header),
        labels_json=_escape(json.dumps(list(text.labels), ensure_ascii=False)),
        initial_value_json=None if initial_value is None else _escape(json.dumps(initial_value)),
        short_instructions_html=text.short_instructions_html,
        full_instructions_html=text.full_instructions_html,
        form_action=None if form_action is None else _escape(form_action),
    )
