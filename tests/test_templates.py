"""The task template renders for Ground Truth, MTurk and the portal, safely and from any install layout."""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import SpecError
from orchestrator.spec import JobSpec, parse_spec
from orchestrator.templates import (
    CROWD_ELEMENTS_URL,
    GROUNDTRUTH_IMAGE_SRC,
    PORTAL_ELEMENT_URL,
    TaskText,
    instructions_html,
    load_template,
    render_task,
    template_file,
)

REPO = Path(__file__).resolve().parent.parent
XSS = "<img src=x onerror=alert(1)>"
XSS_ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"
PRESIGNED = "https://bucket.s3.amazonaws.com/images/a.jpg?X-Amz-Signature=abc&X-Amz-Expires=3600"
TARGET_ARGS = {
    "groundtruth": {},
    "mturk": {"image_url": PRESIGNED},
    "portal": {"image_url": "/images/17", "form_action": "/tasks/17/answer"},
}
INSTRUCTION_TAGS = {"p", "ul", "li", "strong", "img", "h1", "h2", "h3", "h4", "h5", "h6"}


class _Elements(HTMLParser):
    """Start tags in document order, with their attributes unescaped as a browser would."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def first(self, tag: str) -> dict[str, str | None]:
        return next(attrs for name, attrs in self.tags if name == tag)


def make_spec(**changes: object) -> JobSpec:
    data: dict = {
        "name": "street-objects-001",
        "labels": ["car", "pedestrian", "sign"],
        "input_manifest": "in.manifest",
        "output": "out/",
    }
    task = changes.pop("task", None)
    data.update(changes)
    if task is not None:
        data["task"] = task
    return parse_spec(data)


def render(spec: JobSpec | TaskText, target: str, **kwargs: object) -> str:
    return render_task(spec, target, **TARGET_ARGS[target], **kwargs)


@pytest.mark.parametrize("target", ["groundtruth", "mturk", "portal"])
def test_each_target_renders_the_bounding_box_element(target):
    page = render(make_spec(), target)
    elements = _Elements(page)
    box = elements.first("crowd-bounding-box")
    assert box["name"] == ("boundingBox" if target == "groundtruth" else "annotatedResult")
    assert box["header"] == "Draw a box around each object"
    assert json.loads(box["labels"]) == ["car", "pedestrian", "sign"]
    assert "initial-value" not in box
    assert [name for name, _ in elements.tags if name in ("full-instructions", "short-instructions")] == [
        "full-instructions",
        "short-instructions",
    ]
    script = CROWD_ELEMENTS_URL if target != "portal" else PORTAL_ELEMENT_URL
    assert f'<script src="{script}"></script>' in page


def test_groundtruth_keeps_its_own_liquid_and_nothing_else():
    spec = make_spec(
        labels=["{{ x }}", "{% raw %}"],
        task={"title": "{{ task.input }}", "description": "{% if true %}boom{% endif %} }}"},
    )
    page = render(spec, "groundtruth")
    assert f'src="{GROUNDTRUTH_IMAGE_SRC}"' in page
    assert '<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>' in page
    rest = page.replace(GROUNDTRUTH_IMAGE_SRC, "")
    for delimiter in ("{{", "}}", "{%", "%}"):
        assert delimiter not in rest
    # The braces are still there for the worker to read.
    assert json.loads(_Elements(page).first("crowd-bounding-box")["labels"]) == ["{{ x }}", "{% raw %}"]
    assert "<!DOCTYPE" not in page and "<crowd-form>" in page


def test_mturk_and_portal_pages_are_whole_documents_with_escaped_urls():
    mturk = render(make_spec(), "mturk")
    assert mturk.startswith("<!DOCTYPE html>")
    assert _Elements(mturk).first("crowd-bounding-box")["src"] == PRESIGNED
    assert (
        'src="https://bucket.s3.amazonaws.com/images/a.jpg?X-Amz-Signature=abc&amp;X-Amz-Expires=3600"'
        in mturk
    )
    assert "<crowd-form>" in mturk and "{{" not in mturk

    portal = render(make_spec(), "portal")
    elements = _Elements(portal)
    assert elements.first("crowd-form") == {"action": "/tasks/17/answer", "method": "post"}
    assert elements.first("crowd-bounding-box")["src"] == "/images/17"
    assert CROWD_ELEMENTS_URL not in portal


@pytest.mark.parametrize("target", ["groundtruth", "mturk", "portal"])
def test_xss_in_labels_title_and_instructions_is_escaped(target, tmp_path):
    instructions = tmp_path / "instructions.md"
    instructions.write_text(f"{XSS}\n\n- {XSS}\n\n**{XSS}** <script>alert(2)</script>\n", encoding="utf-8")
    quote_breaker = "\"'><script>alert(3)</script>"
    spec = make_spec(
        labels=["car", XSS, quote_breaker], task={"title": XSS, "instructions": str(instructions)}
    )
    page = render(spec, target)
    assert XSS not in page
    assert XSS_ESCAPED in page
    assert "<script>" not in page
    assert page.count("<script") == 1
    # Nothing the spec wrote became an element.
    assert {name for name, _ in _Elements(page).tags} <= {
        "meta",
        "title",
        "script",
        "crowd-form",
        "crowd-bounding-box",
        "full-instructions",
        "short-instructions",
        "p",
        "ul",
        "li",
        "strong",
    }
    box = _Elements(page).first("crowd-bounding-box")
    assert box["header"] == XSS
    assert json.loads(box["labels"]) == ["car", XSS, quote_breaker]


def test_labels_attribute_parses_back_to_the_labels():
    labels = ["car", "it's", 'say "hi"', "Fußgänger & Rad", "a&amp;b", "{x}"]
    page = render(make_spec(labels=labels), "mturk")
    start = page.index("labels='") + len("labels='")
    raw = page[start : page.index("'", start)]
    assert json.loads(html.unescape(raw)) == labels


def test_initial_value_is_rendered_as_json():
    boxes = [{"label": "car", "left": 10, "top": 20, "width": 30, "height": 40}]
    page = render(make_spec(), "portal", initial_value=boxes)
    assert json.loads(_Elements(page).first("crowd-bounding-box")["initial-value"]) == boxes


def test_instructions_come_from_the_file_else_the_description(tmp_path):
    described = TaskText.from_spec(make_spec(task={"description": "Box **every** car."}))
    assert described.full_instructions_html == "<p>Box <strong>every</strong> car.</p>"

    path = tmp_path / "how.md"
    path.write_text("# How\n\nBox cars.\n\n- tight\n", encoding="utf-8")
    from_file = TaskText.from_spec(make_spec(task={"description": "ignored", "instructions": str(path)}))
    assert from_file.short_instructions_html == "<p>Box cars.</p>"
    assert "ignored" not in from_file.full_instructions_html

    missing = tmp_path / "nope.md"
    with pytest.raises(SpecError) as info:
        render(make_spec(task={"instructions": str(missing)}), "groundtruth")
    assert info.value.problems == [("task.instructions", f"file not found: {missing}")]


def test_markdown_subset():
    short, full = instructions_html(
        "# Boxes\n\nDraw **tight** boxes\naround every car.\n\n"
        "- one box per car\n- include the **wheels**\n\n"
        "![a good box](examples/good.png)\n\n## Hard cases\nSkip cars under 10 pixels.\n"
    )
    assert short == "<p>Draw <strong>tight</strong> boxes\naround every car.</p>"
    assert full == (
        "<h1>Boxes</h1>\n"
        "<p>Draw <strong>tight</strong> boxes\naround every car.</p>\n"
        "<ul><li>one box per car</li><li>include the <strong>wheels</strong></li></ul>\n"
        '<p><img src="examples/good.png" alt="a good box"></p>\n'
        "<h2>Hard cases</h2>\n"
        "<p>Skip cars under 10 pixels.</p>"
    )


def test_markdown_without_paragraph_uses_everything_as_short_instructions():
    short, full = instructions_html("- tight\n- complete\n")
    assert short == full == "<ul><li>tight</li><li>complete</li></ul>"
    assert instructions_html("") == ("", "")


def test_raw_html_in_markdown_is_text():
    short, _ = instructions_html('<b onclick="x()">bold</b> & <!-- c -->')
    assert short == "<p>&lt;b onclick=&#34;x()&#34;&gt;bold&lt;/b&gt; &amp; &lt;!-- c --&gt;</p>"


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/a.png",
        "http://example.com/a.png?x=1",
        "examples/a.png",
        "/static/a.png",
        "//cdn.example.com/a.png",
        "data:image/png;base64,iVBORw0KGgo=",
    ],
)
def test_markdown_keeps_safe_image_urls(url):
    _, full = instructions_html(f"![example]({url})")
    assert _Elements(full).first("img") == {"src": url, "alt": "example"}


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "vbscript:msgbox",
        "data:text/html,<script>",
        "file:///etc/passwd",
    ],
)
def test_markdown_drops_unsafe_image_urls(url):
    _, full = instructions_html(f"see ![example]({url}) here")
    assert "<img" not in full
    assert url.split(":")[0] + ":" not in full
    assert full.startswith("<p>see example")


def test_markdown_entity_tricks_stay_inert():
    # Escaping comes first, so an entity cannot spell a colon: the browser reads a relative URL.
    _, full = instructions_html("![x](javascript&#58;alert(1)) ![y](https://x/a.png?q=&quot;onerror=)")
    images = [attrs for name, attrs in _Elements(full).tags if name == "img"]
    assert images == [
        {"src": "javascript&#58;alert(1", "alt": "x"},
        {"src": "https://x/a.png?q=&quot;onerror=", "alt": "y"},
    ]


def test_markdown_image_alt_is_escaped_and_not_bolded():
    _, full = instructions_html('![a "quoted" **alt**](a.png) and **bold**')
    assert full == '<p><img src="a.png" alt="a &#34;quoted&#34; **alt**"> and <strong>bold</strong></p>'


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_markdown_yields_only_the_subset_tags(markdown):
    _, full = instructions_html(markdown)
    elements = _Elements(full)
    assert {name for name, _ in elements.tags} <= INSTRUCTION_TAGS
    for name, attrs in elements.tags:
        assert attrs == {} or (name == "img" and set(attrs) == {"src", "alt"})
    assert "{" not in full and "}" not in full


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.text(min_size=1, max_size=40).filter(lambda s: s.strip()),
        min_size=1,
        max_size=10,
        unique=True,
    ),
    st.text(min_size=1, max_size=80),
)
def test_any_labels_and_title_round_trip_in_groundtruth(labels, title):
    page = render(make_spec(labels=labels, task={"title": title}), "groundtruth")
    box = _Elements(page).first("crowd-bounding-box")
    assert json.loads(box["labels"]) == labels
    assert box["header"] == title
    rest = page.replace(GROUNDTRUTH_IMAGE_SRC, "")
    assert "{" not in rest and "}" not in rest


def test_arguments_must_fit_the_target():
    spec = make_spec()
    with pytest.raises(ValueError, match="groundtruth"):
        render_task(spec, "groundtruth", image_url=PRESIGNED)
    with pytest.raises(ValueError, match="https"):
        render_task(spec, "mturk", image_url="http://bucket/a.jpg")
    with pytest.raises(ValueError, match="https"):
        render_task(spec, "mturk")
    with pytest.raises(ValueError, match="form_action"):
        render_task(spec, "mturk", image_url=PRESIGNED, form_action="/x")
    with pytest.raises(ValueError, match="portal"):
        render_task(spec, "portal", image_url="/images/1")
    with pytest.raises(ValueError, match="unknown target"):
        render_task(spec, "cvat")  # type: ignore[arg-type]


def test_task_text_renders_like_the_spec():
    spec = make_spec()
    assert render_task(TaskText.from_spec(spec), "mturk", image_url=PRESIGNED) == render(spec, "mturk")


def test_typical_mturk_page_is_well_under_the_htmlquestion_limit(tmp_path):
    instructions = tmp_path / "instructions.md"
    rules = "\n".join(
        f"- rule {i}: draw a **tight** box around every visible object of this kind" for i in range(30)
    )
    instructions.write_text(
        "Draw a tight box around every car, pedestrian and sign.\n\n"
        f"{rules}\n\n![good](https://example.com/examples/good.png)\n",
        encoding="utf-8",
    )
    spec = make_spec(
        labels=["car", "truck", "bus", "bicycle", "motorcycle", "pedestrian", "sign", "traffic light"],
        task={"instructions": str(instructions)},
    )
    page = render(spec, "mturk")
    assert len(page.encode("utf-8")) < 65_535 // 8
    # The MTurk backend wraps the page in CDATA: nothing the spec wrote may end it early.
    cdata_breaker = render(make_spec(task={"title": "]]>", "description": "]]> <![CDATA["}), "mturk")
    assert "]]>" not in cdata_breaker


def test_template_found_in_the_source_tree():
    assert Path(str(template_file())) == REPO / "task_templates" / "bounding_box.liquid.html"
    assert "<crowd-bounding-box" in load_template()


def test_template_found_in_an_installed_wheel_layout(tmp_path):
    # The wheel holds orchestrator/ with task_templates/ force-included inside it, and no repo around it.
    site = tmp_path / "site-packages"
    shutil.copytree(
        REPO / "orchestrator", site / "orchestrator", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(REPO / "task_templates", site / "orchestrator" / "task_templates")
    code = (
        "import orchestrator.templates as t\n"
        "print(t.__file__)\n"
        "print(t.template_file())\n"
        "print(len(t.render_task(t.TaskText('h', ('car',), '', ''), 'groundtruth')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    module, template, size = result.stdout.splitlines()
    assert Path(module).is_relative_to(site)
    assert Path(template) == site / "orchestrator" / "task_templates" / "bounding_box.liquid.html"
    assert int(size) > 0
