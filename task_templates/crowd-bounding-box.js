/*
 * labeljob's offline implementation of the AWS crowd HTML elements that
 * task_templates/bounding_box.liquid.html uses: <crowd-form>, <crowd-bounding-box>,
 * <full-instructions> and <short-instructions>. No CDN, no build step.
 *
 * The answer is exactly the AWS element's (keys in the order AWS writes them):
 *   {"boundingBoxes": [{"height", "label", "left", "top", "width"}],
 *    "inputImageProperties": {"height", "width"}}
 * in integer pixels of the image's natural size, top-left origin; with an initial-value, AWS also
 * reports "initialValueModified". <crowd-form> posts one field, taskAnswers = [{"<name>": answer}].
 *
 * Text from the template (header, labels) is only ever inserted as text nodes, never as HTML.
 */
(() => {
  "use strict";

  const MIN_BOX = 3; // image pixels; a smaller drag is an accidental click, not a box
  const MAX_ZOOM = 32; // relative to the fitted scale
  const ZOOM_STEP = 1.25;
  const HANDLES = ["nw", "n", "ne", "e", "se", "s", "sw", "w"];
  // Dark enough for white tag text; one per label (AWS allows at most 10 labels).
  const COLORS = ["#1f77b4", "#d62728", "#2a8a2a", "#b35900", "#7b3fb5",
    "#8c564b", "#c2185b", "#00838f", "#6d6d00", "#37474f"];
  const SHORTCUTS = [
    ["Drag on the image", "draw a box (Shift+drag: draw inside another box)"],
    ["Drag a box / its handles", "move it / resize it"],
    ["1 – 9", "label for new boxes"],
    ["Shift + 1 – 9", "change the selected box's label"],
    ["Delete or Backspace", "delete the selected box"],
    ["Arrow keys", "move the selected box 1 px (Shift: 10 px), or pan"],
    ["+ / − or mouse wheel", "zoom in / out"],
    ["0", "fit the image"],
    ["Space + drag, middle drag", "pan"],
    ["Escape", "deselect, cancel"],
    ["Ctrl + Z / Ctrl + Shift + Z", "undo / redo"],
  ];
  // Undo steps kept per image.
  const MAX_UNDO = 100;

  const CSS = `
crowd-bounding-box{display:block;font:14px/1.4 system-ui,sans-serif;color:#222}
.cbb [hidden]{display:none!important}
.cbb{display:grid;grid-template-columns:minmax(0,1fr) 260px;gap:12px}
.cbb-header{grid-column:1/-1;margin:0;font-size:20px}
.cbb-side{display:flex;flex-direction:column;gap:12px;min-width:0}
.cbb-side h3{margin:0 0 4px;font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:#555}
.cbb-toolbar{display:flex;flex-wrap:wrap;gap:6px;margin-bottom:6px;align-items:center}
.cbb button{font:inherit;padding:5px 10px;border:1px solid #888;border-radius:4px;background:#f4f4f4;cursor:pointer}
.cbb button:hover{background:#e6e6e6}
.cbb button:focus-visible,.cbb-stage:focus-visible,.cbb select:focus-visible{outline:3px solid #ffb300;outline-offset:1px}
.cbb button[aria-pressed=true]{background:#1d3557;color:#fff;border-color:#1d3557}
.cbb-sep{flex:1}
.cbb-stage{position:relative;overflow:hidden;width:100%;aspect-ratio:4/3;min-height:200px;max-height:max(320px,62vh);
  background:#2b2b2b;border-radius:4px;touch-action:none;cursor:crosshair;user-select:none}
.cbb-stage.cbb-panning{cursor:grab}
.cbb-stage img{position:absolute;max-width:none;pointer-events:none}
.cbb-layer{position:absolute;inset:0}
.cbb-box{position:absolute;box-sizing:border-box;border:2px solid;box-shadow:0 0 0 1px #fff8;cursor:move}
.cbb-box.cbb-selected{border-width:3px;background:#ffffff22}
.cbb-box.cbb-preview{pointer-events:none;border-style:dashed}
.cbb-box.cbb-overlay{pointer-events:none;border-style:dashed;box-shadow:none}
.cbb-tag{position:absolute;left:-2px;bottom:100%;padding:0 4px;color:#fff;font-size:12px;font-weight:600;white-space:nowrap;pointer-events:none}
.cbb-tag.cbb-inside{bottom:auto;top:0}
.cbb-selected>.cbb-tag:not(.cbb-inside){margin-bottom:7px}
.cbb-handle{position:absolute;width:10px;height:10px;margin:-6px 0 0 -6px;background:#fff;border:1px solid #000}
.cbb-nw{left:0;top:0;cursor:nwse-resize}.cbb-n{left:50%;top:0;cursor:ns-resize}.cbb-ne{left:100%;top:0;cursor:nesw-resize}
.cbb-e{left:100%;top:50%;cursor:ew-resize}.cbb-se{left:100%;top:100%;cursor:nwse-resize}.cbb-s{left:50%;top:100%;cursor:ns-resize}
.cbb-sw{left:0;top:100%;cursor:nesw-resize}.cbb-w{left:0;top:50%;cursor:ew-resize}
.cbb-message{position:absolute;inset:0;display:grid;place-items:center;color:#eee}
.cbb-status{min-height:1.4em;margin-top:4px}
.cbb-status.cbb-error,.cbb-form-error{color:#b00020;font-weight:600}
.cbb-confirm{padding:8px;margin-bottom:6px;background:#fff3cd;border:1px solid #e0b000;border-radius:4px}
.cbb-labels{display:flex;flex-direction:column;gap:4px}
.cbb-labels button{text-align:left;display:flex;gap:8px;align-items:center}
.cbb-key{display:inline-block;min-width:1.3em;text-align:center;border:1px solid currentColor;border-radius:3px;font-size:12px}
.cbb-swatch{width:12px;height:12px;border-radius:2px;flex:none}
.cbb-list{margin:0;padding:0;list-style:none;display:flex;flex-direction:column;gap:4px;max-height:30vh;overflow:auto}
.cbb-list li{display:flex;gap:6px;align-items:center;padding:2px;border-radius:4px}
.cbb-list li.cbb-current{background:#fff3cd}
.cbb-list select{min-width:0;flex:1}
.cbb-list button{padding:2px 8px}
.cbb-size{font-variant-numeric:tabular-nums;color:#555;font-size:12px}
.cbb-help dl{margin:6px 0 0;font-size:12px}
.cbb-help dt{font-weight:600}.cbb-help dd{margin:0 0 4px 10px}
.cbb summary{cursor:pointer;font-weight:600}.cbb-full h4{margin:6px 0}
short-instructions{display:block}
.cbb-submit-row{display:flex;gap:12px;align-items:center;justify-content:flex-end;margin-top:12px}
.cbb-submit{font:600 16px system-ui,sans-serif;padding:8px 28px;border:0;border-radius:4px;background:#1d6f42;color:#fff;cursor:pointer}
.cbb-submit:disabled{background:#888;cursor:default}
@media (max-width:800px){.cbb{grid-template-columns:1fr}}`;

  /** Create an element; strings among children become text nodes, so they are never parsed as HTML. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      // Styles through the CSSOM: a Content-Security-Policy without 'unsafe-inline' still allows them.
      if (key === "style") node.style.cssText = value;
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  let styled = false;
  function injectStyle() {
    if (styled) return;
    styled = true;
    // A constructed style sheet, unlike a <style> element, is not blocked by a strict CSP.
    if (document.adoptedStyleSheets) {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
    } else document.head.append(el("style", {}, CSS));
  }

  /** Run fn once the whole document is parsed: the template loads this script before the elements. */
  function whenParsed(fn) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fn, { once: true });
    else fn();
  }

  const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);

  /**
   * JSON, or the JavaScript-literal style of AWS's own examples (labels="['Cat', 'Dog']", and
   * initial-value objects with bare keys and trailing commas), rewritten to JSON token by token.
   */
  function parseLoose(text, fallback) {
    if (!text || !text.trim()) return fallback;
    try {
      return JSON.parse(text);
    } catch {
      const token = /"(?:[^"\\]|\\.)*"|'((?:[^'\\]|\\.)*)'|([A-Za-z_$][\w$]*)(?=\s*:)|(,)(?=\s*[\]}])|[^]/g;
      const json = text.replace(token, (match, single, key, trailingComma) => {
        if (single !== undefined) return JSON.stringify(single.replace(/\\(.)/g, "$1"));
        if (key !== undefined) return JSON.stringify(key);
        return trailingComma ? "" : match;
      });
      try {
        return JSON.parse(json);
      } catch {
        return fallback;
      }
    }
  }

  class CrowdBoundingBox extends HTMLElement {
    connectedCallback() {
      // Moving the element in the DOM calls this again; build only once.
      if (this.built) return;
      this.built = true;
      whenParsed(() => this.build());
    }

    build() {
      injectStyle();
      const rawLabels = parseLoose(this.getAttribute("labels"), []);
      this.labels = (Array.isArray(rawLabels) ? rawLabels : []).map(String);
      const initial = parseLoose(this.getAttribute("initial-value"), null);
      this.initialBoxes = Array.isArray(initial) ? initial : null;
      this.boxes = [];
      this.undoStack = [];
      this.redoStack = [];
      this.selected = null;
      this.labelIndex = 0;
      this.nothingToBox = false;
      this.loaded = false;
      this.drag = null;
      this.spaceDown = false;
      this.panTool = false;
      this.view = { s: 1, tx: 0, ty: 0, fit: 1, fitted: true };
      this.buildDom();
      this.listen();
      this.img.src = this.getAttribute("src") || "";
    }

    get name() {
      return this.getAttribute("name") || "boundingBox";
    }

    /**
     * Boxes drawn over the image for reference only (never part of the answer, never draggable):
     * [{name, color, boxes: [{label, left, top, width, height}]}]. The review page shows each
     * worker's boxes this way.
     */
    get overlays() {
      return this._overlays || [];
    }

    set overlays(list) {
      this._overlays = Array.isArray(list) ? list : [];
      this.render();
    }

    buildDom() {
      const shortText = this.querySelector(":scope > short-instructions");
      const fullText = this.querySelector(":scope > full-instructions");
      const button = (label, title, action, ariaLabel = label) => {
        const b = el("button", { type: "button", title, "aria-label": ariaLabel }, label);
        b.addEventListener("click", action);
        return b;
      };

      this.img = el("img", { alt: this.getAttribute("header") || "Image to label", draggable: "false" });
      this.layer = el("div", { class: "cbb-layer" });
      this.message = el("div", { class: "cbb-message" }, "Loading image…");
      this.stage = el("div", {
        class: "cbb-stage", tabindex: "0", role: "application",
        "aria-label": "Image. Drag to draw a box; see Keyboard shortcuts.",
      }, this.img, this.layer, this.message);
      this.status = el("div", { class: "cbb-status", role: "status", "aria-live": "polite" });

      this.panButton = button("Pan", "Pan the image (or hold Space and drag)",
        () => this.setPanTool(!this.panTool));
      this.panButton.setAttribute("aria-pressed", "false");
      this.confirmBox = el("div",
        { class: "cbb-confirm", role: "alertdialog", "aria-label": "Confirm nothing to box" },
        "Submit this image with no boxes? Any boxes drawn are removed. ",
        button("Yes, nothing to box", "Submit an empty answer", () => this.confirmNothing()),
        " ",
        button("Cancel", "Keep drawing", () => this.showConfirm(false)));
      this.confirmBox.hidden = true;
      const toolbar = el("div", { class: "cbb-toolbar", role: "toolbar", "aria-label": "Image tools" },
        button("−", "Zoom out (−)", () => this.zoomCenter(1 / ZOOM_STEP), "Zoom out"),
        button("+", "Zoom in (+)", () => this.zoomCenter(ZOOM_STEP), "Zoom in"),
        button("Fit", "Fit the image (0)", () => this.fitView()),
        this.panButton,
        el("span", { class: "cbb-sep" }),
        button("Delete box", "Delete the selected box (Delete)", () => this.deleteSelected()),
        button("Nothing to box", "There is nothing to label in this image", () => this.showConfirm(true)));

      this.labelButtons = this.labels.map((label, i) => {
        const b = button("", `Label for new boxes${i < 9 ? ` (${i + 1})` : ""}`, () => this.chooseLabel(i), label);
        if (i < 9) b.append(el("span", { class: "cbb-key" }, String(i + 1)));
        b.append(el("span", { class: "cbb-swatch", style: `background:${COLORS[i % COLORS.length]}` }),
          el("span", {}, label));
        return b;
      });
      this.count = el("span");
      this.list = el("ol", { class: "cbb-list", "aria-label": "Boxes" });
      const full = el("details", { class: "cbb-full" }, el("summary", {}, "Full instructions"));
      if (fullText?.getAttribute("header")) full.append(el("h4", {}, fullText.getAttribute("header")));
      if (fullText) full.append(fullText);
      const help = el("details", { class: "cbb-help" }, el("summary", {}, "Keyboard shortcuts"),
        el("dl", {}, ...SHORTCUTS.flatMap(([keys, what]) => [el("dt", {}, keys), el("dd", {}, what)])));

      const side = el("div", { class: "cbb-side" },
        el("section", {}, el("h3", {}, "Instructions"), ...(shortText ? [shortText] : []), full),
        el("section", {}, el("h3", {}, "Label"),
          el("div", { class: "cbb-labels", role: "group", "aria-label": "Label for new boxes" },
            ...this.labelButtons)),
        el("section", {}, el("h3", {}, "Boxes ", this.count), this.list),
        help);
      const main = el("div", { class: "cbb-main" }, toolbar, this.confirmBox, this.stage, this.status);
      const header = this.getAttribute("header");
      const title = header ? [el("h2", { class: "cbb-header" }, header)] : [];
      this.replaceChildren(el("div", { class: "cbb" }, ...title, main, side));
      this.chooseLabel(0);
      this.renderList();
      this.say("Drag on the image to draw a box; see Keyboard shortcuts for the keys.");
    }

    listen() {
      this.img.addEventListener("load", () => this.onImageLoad());
      this.img.addEventListener("error", () => {
        this.message.textContent = "The image could not be loaded.";
        this.say("The image could not be loaded; reload the page to try again.", true);
      });
      this.stage.addEventListener("pointerdown", (e) => this.onPointerDown(e));
      this.stage.addEventListener("pointermove", (e) => this.onPointerMove(e));
      this.stage.addEventListener("pointerup", () => this.endDrag(false));
      this.stage.addEventListener("pointercancel", () => this.endDrag(true));
      // Not passive: the wheel zooms the image instead of scrolling the page.
      this.stage.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
      document.addEventListener("keydown", (e) => this.onKey(e, true));
      document.addEventListener("keyup", (e) => this.onKey(e, false));
      new ResizeObserver(() => this.onResize()).observe(this.stage);
    }

    onImageLoad() {
      this.loaded = true;
      this.message.hidden = true;
      // The stage takes the image's shape (up to a height limit), so a phone shows no empty bands.
      this.stage.style.aspectRatio = `${this.img.naturalWidth} / ${this.img.naturalHeight}`;
      this.boxes = (this.initialBoxes || []).map((b) => this.clip({
        label: String(b.label ?? ""), left: Number(b.left) || 0, top: Number(b.top) || 0,
        width: Number(b.width) || 0, height: Number(b.height) || 0,
      })).filter((b) => b.width > 0 && b.height > 0);
      this.initialJson = JSON.stringify(this.boxes);
      this.fitView();
      this.renderList();
    }

    /** The answer, exactly as AWS's element writes it. */
    get value() {
      const answer = {
        boundingBoxes: this.boxes.map((b) => ({
          height: b.height, label: b.label, left: b.left, top: b.top, width: b.width,
        })),
        inputImageProperties: { height: this.img.naturalHeight, width: this.img.naturalWidth },
      };
      if (this.initialBoxes) answer.initialValueModified = JSON.stringify(this.boxes) !== this.initialJson;
      return answer;
    }

    /** A message telling the worker what is missing, or "" when the answer can be submitted. */
    validate() {
      if (!this.loaded) return "The image has not loaded, so the task cannot be submitted.";
      if (!this.boxes.length && !this.nothingToBox) {
        return "Draw at least one box, or choose “Nothing to box” if there is nothing to label.";
      }
      return "";
    }

    // ---- geometry -------------------------------------------------------------------------

    /** Round to integer pixels and keep the box inside the image. */
    clip(b) {
      const w = this.img.naturalWidth, h = this.img.naturalHeight;
      const left = clamp(Math.round(b.left), 0, w), top = clamp(Math.round(b.top), 0, h);
      const right = clamp(Math.round(b.left + b.width), left, w);
      const bottom = clamp(Math.round(b.top + b.height), top, h);
      return { label: b.label, left, top, width: right - left, height: bottom - top };
    }

    /** Pointer position in natural image pixels (not clipped). */
    toImage(e) {
      const r = this.img.getBoundingClientRect();
      return {
        x: ((e.clientX - r.left) * this.img.naturalWidth) / r.width,
        y: ((e.clientY - r.top) * this.img.naturalHeight) / r.height,
      };
    }

    // ---- view: fit, zoom, pan -------------------------------------------------------------

    fitView() {
      if (!this.loaded) return;
      const W = this.stage.clientWidth, H = this.stage.clientHeight;
      const fit = Math.min(W / this.img.naturalWidth, H / this.img.naturalHeight);
      this.view = { s: fit, tx: 0, ty: 0, fit, fitted: true };
      this.clampView();
      this.render();
    }

    /** Zoom by factor, keeping the image point under (cx, cy) (stage pixels) in place. */
    zoomAt(factor, cx, cy) {
      if (!this.loaded) return;
      const v = this.view;
      const s = clamp(v.s * factor, v.fit, v.fit * MAX_ZOOM);
      v.tx = cx - ((cx - v.tx) * s) / v.s;
      v.ty = cy - ((cy - v.ty) * s) / v.s;
      v.s = s;
      v.fitted = s === v.fit;
      this.clampView();
      this.render();
    }

    zoomCenter(factor) {
      this.zoomAt(factor, this.stage.clientWidth / 2, this.stage.clientHeight / 2);
    }

    /** Center the image along an axis where it is smaller than the stage; else keep the stage covered. */
    clampView() {
      const v = this.view;
      const place = (t, size, room) => (size <= room ? (room - size) / 2 : clamp(t, room - size, 0));
      v.tx = place(v.tx, this.img.naturalWidth * v.s, this.stage.clientWidth);
      v.ty = place(v.ty, this.img.naturalHeight * v.s, this.stage.clientHeight);
    }

    onResize() {
      if (!this.loaded) return;
      if (this.view.fitted) return this.fitView();
      this.view.fit = Math.min(this.stage.clientWidth / this.img.naturalWidth,
        this.stage.clientHeight / this.img.naturalHeight);
      this.view.s = Math.max(this.view.s, this.view.fit);
      this.clampView();
      this.render();
    }

    onWheel(e) {
      e.preventDefault();
      const r = this.stage.getBoundingClientRect();
      const lines = e.deltaMode === WheelEvent.DOM_DELTA_LINE ? 16 : 1;
      this.zoomAt(Math.exp(-e.deltaY * lines * 0.002), e.clientX - r.left, e.clientY - r.top);
    }

    panBy(dx, dy) {
      this.view.tx += dx;
      this.view.ty += dy;
      this.clampView();
      this.render();
    }

    setPanTool(on) {
      this.panTool = on;
      this.panButton.setAttribute("aria-pressed", String(on));
      this.stage.classList.toggle("cbb-panning", on || this.spaceDown);
    }

    // ---- pointer: draw, move, resize, pan -------------------------------------------------

    onPointerDown(e) {
      if (!e.isPrimary || !this.loaded || e.button > 1) return;
      e.preventDefault(); // no text selection or native image drag
      this.stage.focus({ preventScroll: true });
      this.stage.setPointerCapture(e.pointerId);
      const p = this.toImage(e);
      const handle = e.target.closest("[data-handle]");
      const boxEl = e.target.closest(".cbb-box");
      if (e.button === 1 || this.spaceDown || this.panTool) {
        this.drag = { mode: "pan", x: e.clientX, y: e.clientY, tx: this.view.tx, ty: this.view.ty };
      } else if (handle && this.selected) {
        const box = this.selected;
        this.drag = { mode: "resize", edges: handle.dataset.handle, box, orig: { ...box }, before: this.snapshot() };
      } else if (boxEl && !e.shiftKey) {
        const box = this.boxes[Number(boxEl.dataset.index)];
        this.select(box);
        this.drag = { mode: "move", box, orig: { ...box }, p0: p, before: this.snapshot() };
      } else {
        if (!this.labels.length) return this.say("This task has no labels, so no box can be drawn.", true);
        this.select(null);
        this.drag = { mode: "draw", x0: p.x, y0: p.y, box: null, before: this.snapshot() };
      }
      this.render();
    }

    onPointerMove(e) {
      const d = this.drag;
      if (!d) return;
      const p = this.toImage(e);
      const W = this.img.naturalWidth, H = this.img.naturalHeight;
      if (d.mode === "pan") {
        this.view.tx = d.tx + e.clientX - d.x;
        this.view.ty = d.ty + e.clientY - d.y;
        this.view.fitted = false;
        this.clampView();
      } else if (d.mode === "draw") {
        const x0 = clamp(d.x0, 0, W), y0 = clamp(d.y0, 0, H), x1 = clamp(p.x, 0, W), y1 = clamp(p.y, 0, H);
        d.box = this.clip({
          label: this.labels[this.labelIndex], left: Math.min(x0, x1), top: Math.min(y0, y1),
          width: Math.abs(x1 - x0), height: Math.abs(y1 - y0),
        });
      } else if (d.mode === "move") {
        d.box.left = clamp(Math.round(d.orig.left + p.x - d.p0.x), 0, W - d.orig.width);
        d.box.top = clamp(Math.round(d.orig.top + p.y - d.p0.y), 0, H - d.orig.height);
      } else {
        // Resize: the dragged edges follow the pointer but stop MIN_BOX short of the opposite edge.
        const o = d.orig, x = clamp(Math.round(p.x), 0, W), y = clamp(Math.round(p.y), 0, H);
        let left = o.left, top = o.top, right = o.left + o.width, bottom = o.top + o.height;
        if (d.edges.includes("w")) left = Math.max(0, Math.min(x, right - MIN_BOX));
        if (d.edges.includes("e")) right = Math.min(W, Math.max(x, left + MIN_BOX));
        if (d.edges.includes("n")) top = Math.max(0, Math.min(y, bottom - MIN_BOX));
        if (d.edges.includes("s")) bottom = Math.min(H, Math.max(y, top + MIN_BOX));
        Object.assign(d.box, { left, top, width: right - left, height: bottom - top });
      }
      this.render();
    }

    endDrag(cancelled) {
      const d = this.drag;
      if (!d) return;
      this.drag = null;
      if (d.mode === "draw" && !cancelled && d.box && d.box.width >= MIN_BOX && d.box.height >= MIN_BOX) {
        this.remember(d.before);
        this.boxes.push(d.box);
        this.nothingToBox = false;
        this.select(d.box);
        this.say(`Box ${this.boxes.length} drawn: ${d.box.label}.`);
      } else if (cancelled && (d.mode === "move" || d.mode === "resize")) {
        Object.assign(d.box, d.orig);
      } else if (d.before && JSON.stringify(d.box) !== JSON.stringify(d.orig)) {
        this.remember(d.before); // a move or resize that changed the box
      }
      this.render();
      this.renderList();
    }

    // ---- boxes and labels -----------------------------------------------------------------

    select(box) {
      this.selected = box;
      this.renderList();
    }

    chooseLabel(i) {
      if (i >= this.labels.length) return;
      this.labelIndex = i;
      this.labelButtons.forEach((b, j) => b.setAttribute("aria-pressed", String(i === j)));
      this.say(`New boxes: ${this.labels[i]}.`);
    }

    relabel(box, label) {
      if (box.label === label) return;
      this.remember();
      box.label = label;
      this.render();
      this.renderList();
    }

    deleteBox(box) {
      this.remember();
      this.boxes = this.boxes.filter((b) => b !== box);
      if (this.selected === box) this.selected = null;
      this.say(`Box deleted; ${this.boxes.length} left.`);
      this.render();
      this.renderList();
    }

    deleteSelected() {
      if (this.selected) this.deleteBox(this.selected);
      else this.say("Select a box first (click it, or its number in the list).");
    }

    // ---- undo and redo: whole snapshots of the boxes, which are few --------------------------

    snapshot() {
      return JSON.stringify(this.boxes);
    }

    /** Record the boxes as they were before a change (`before`, else now); a new change ends redo. */
    remember(before = this.snapshot()) {
      this.undoStack.push(before);
      if (this.undoStack.length > MAX_UNDO) this.undoStack.shift();
      this.redoStack = [];
    }

    /** Undo (redo = false) or redo the last change of the boxes. */
    step(redo) {
      const [from, to] = redo ? [this.redoStack, this.undoStack] : [this.undoStack, this.redoStack];
      if (!from.length) return this.say(redo ? "Nothing to redo." : "Nothing to undo.");
      to.push(this.snapshot());
      this.boxes = JSON.parse(from.pop());
      this.selected = null;
      this.nothingToBox = false;
      this.say(`${redo ? "Redone" : "Undone"}: ${this.boxes.length} box${this.boxes.length === 1 ? "" : "es"}.`);
      this.render();
      this.renderList();
    }

    showConfirm(show) {
      this.confirmBox.hidden = !show;
      if (show) this.confirmBox.querySelector("button").focus();
    }

    /** "Nothing to box", confirmed: clear the boxes and submit the empty answer at once. */
    confirmNothing() {
      this.showConfirm(false);
      this.boxes = [];
      this.selected = null;
      this.nothingToBox = true;
      this.render();
      this.renderList();
      this.say("Marked: nothing to box.");
      this.closest("crowd-form")?.submitAnswers();
    }

    // ---- keyboard -------------------------------------------------------------------------

    /** Keys belong to this element when focus is inside it, or on the page body and it is the first one. */
    ownsKey(e) {
      const t = e.target;
      if (t.closest?.("input, textarea, select, [contenteditable]")) return false;
      if ((e.key === " " || e.key === "Enter") && t.closest?.("button, summary, a")) return false;
      if (this.contains(t)) return true;
      return (t === document.body || t === document.documentElement) &&
        document.querySelector("crowd-bounding-box") === this;
    }

    onKey(e, down) {
      if (down && this.loaded && (e.ctrlKey || e.metaKey) && !e.altKey && this.ownsKey(e)) {
        const key = e.key.toLowerCase();
        if (key === "z" || key === "y") {
          this.step(key === "y" || e.shiftKey);
          e.preventDefault();
        }
        return;
      }
      if (!this.loaded || e.ctrlKey || e.metaKey || e.altKey || !this.ownsKey(e)) return;
      if (e.key === " ") {
        this.spaceDown = down;
        this.stage.classList.toggle("cbb-panning", down || this.panTool);
        e.preventDefault(); // no page scroll
        return;
      }
      if (!down) return;
      const digit = /^Digit([1-9])$/.exec(e.code);
      const step = e.shiftKey ? 10 : 1;
      const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
      if (digit && e.shiftKey) {
        const label = this.labels[Number(digit[1]) - 1];
        if (this.selected && label !== undefined) this.relabel(this.selected, label);
      } else if (digit) this.chooseLabel(Number(digit[1]) - 1);
      else if (e.key === "Delete" || e.key === "Backspace") this.deleteSelected();
      else if (e.key === "+" || e.key === "=") this.zoomCenter(ZOOM_STEP);
      else if (e.key === "-" || e.key === "_") this.zoomCenter(1 / ZOOM_STEP);
      else if (e.key === "0") this.fitView();
      else if (e.key === "Escape") {
        if (this.drag) this.endDrag(true);
        this.showConfirm(false);
        this.select(null);
        this.render();
      } else if (arrows[e.key]) {
        const [dx, dy] = arrows[e.key];
        const b = this.selected;
        if (!b) this.panBy(-dx * 40, -dy * 40);
        else {
          this.remember();
          b.left = clamp(b.left + dx * step, 0, this.img.naturalWidth - b.width);
          b.top = clamp(b.top + dy * step, 0, this.img.naturalHeight - b.height);
          this.render();
        }
      } else return;
      e.preventDefault();
    }

    // ---- rendering ------------------------------------------------------------------------

    colorOf(label) {
      const i = this.labels.indexOf(label);
      return i < 0 ? "#555" : COLORS[i % COLORS.length];
    }

    say(text, error = false) {
      this.status.textContent = text;
      this.status.classList.toggle("cbb-error", error);
    }

    /** Position the image and redraw every box in stage pixels (borders stay crisp at any zoom). */
    render() {
      if (!this.loaded) return;
      const { s, tx, ty } = this.view;
      Object.assign(this.img.style, {
        left: `${tx}px`, top: `${ty}px`,
        width: `${this.img.naturalWidth * s}px`, height: `${this.img.naturalHeight * s}px`,
        imageRendering: s > 3 ? "pixelated" : "auto", // see the pixels when placing a tight box
      });
      const items = this.boxes.map((box, index) => ({ box, index }));
      if (this.drag?.mode === "draw" && this.drag.box) items.push({ box: this.drag.box, index: -1 });
      // Larger boxes first, so a small box inside a big one stays on top and clickable.
      items.sort((a, b) => b.box.width * b.box.height - a.box.width * a.box.height);
      this.layer.replaceChildren(...items.map(({ box, index }) => {
        const color = this.colorOf(box.label);
        const sTop = ty + box.top * s;
        const div = el("div", {
          class: `cbb-box${index < 0 ? " cbb-preview" : ""}${box === this.selected ? " cbb-selected" : ""}`,
          "data-index": String(index),
          style: `left:${tx + box.left * s}px;top:${sTop}px;width:${box.width * s}px;`
            + `height:${box.height * s}px;border-color:${color}`,
        }, el("span", { class: `cbb-tag${sTop < 18 ? " cbb-inside" : ""}`, style: `background:${color}` },
          box.label));
        if (box === this.selected) {
          div.append(...HANDLES.map((h) => el("div", { class: `cbb-handle cbb-${h}`, "data-handle": h })));
        }
        return div;
      }));
      // Reference boxes go on top: they take no pointer events, so the boxes below stay draggable.
      this.layer.append(...this.overlays.flatMap(({ name, color, boxes }) => boxes.map((box) => el("div", {
        class: "cbb-box cbb-overlay", "data-overlay": String(name),
        style: `left:${tx + box.left * s}px;top:${ty + box.top * s}px;width:${box.width * s}px;`
          + `height:${box.height * s}px;border-color:${color}`,
      }, el("span", { class: "cbb-tag cbb-inside", style: `background:${color}` }, `${name}: ${box.label}`)))));
    }

    /** The side list: one row per box with its label picker and a delete button. */
    renderList() {
      this.count.textContent = `(${this.boxes.length})`;
      this.list.replaceChildren(...this.boxes.map((box, i) => {
        const pick = el("button", {
          type: "button", "aria-label": `Select box ${i + 1}`, "aria-pressed": String(box === this.selected),
          style: `border-left:6px solid ${this.colorOf(box.label)}`,
        }, String(i + 1));
        pick.addEventListener("click", () => { this.select(box); this.render(); });
        const labelPicker = el("select", { "aria-label": `Label of box ${i + 1}` });
        const options = this.labels.includes(box.label) ? this.labels : [...this.labels, box.label];
        labelPicker.append(...options.map((l) => new Option(l, l, false, l === box.label)));
        labelPicker.addEventListener("change", () => this.relabel(box, labelPicker.value));
        const remove = el("button",
          { type: "button", "aria-label": `Delete box ${i + 1}`, title: "Delete" }, "×");
        remove.addEventListener("click", () => this.deleteBox(box));
        return el("li", { class: box === this.selected ? "cbb-current" : "" },
          pick, labelPicker, el("span", { class: "cbb-size" }, `${box.width}×${box.height}`), remove);
      }));
    }
  }

  /**
   * <crowd-form>: a Submit button; on submit, taskAnswers = JSON.stringify([{name: value, ...}])
   * goes into a hidden input and the form is submitted natively. The form is the enclosing <form>
   * (its other inputs, e.g. a CSRF token, go along), or else a form built from this element's
   * action/method and the hidden inputs inside it.
   */
  class CrowdForm extends HTMLElement {
    connectedCallback() {
      if (this.built) return;
      this.built = true;
      whenParsed(() => this.build());
    }

    build() {
      injectStyle();
      this.error = el("span", { class: "cbb-form-error", role: "alert" });
      this.button = el("button", { type: "button", class: "cbb-submit" }, "Submit");
      this.button.addEventListener("click", () => this.submitAnswers());
      this.append(el("div", { class: "cbb-submit-row" }, this.error, this.button));
      // Enter in a text field of an enclosing form must go through the same checks.
      this.closest("form")?.addEventListener("submit", (e) => {
        e.preventDefault();
        this.submitAnswers();
      });
      // Coming back with the browser's Back button shows the page as it was left: submitting.
      window.addEventListener("pageshow", (e) => e.persisted && this.setBusy(false));
    }

    setBusy(busy) {
      this.button.disabled = busy;
      this.button.textContent = busy ? "Submitting…" : "Submit";
    }

    /** Validate every widget, then post taskAnswers; returns false when something is missing. */
    submitAnswers() {
      if (this.button.disabled) return false; // one submit only
      const widgets = [...this.querySelectorAll("crowd-bounding-box")];
      for (const w of widgets) {
        const problem = w.validate();
        if (problem) {
          this.error.textContent = problem;
          w.stage?.focus();
          return false;
        }
      }
      this.error.textContent = "";
      const answers = Object.fromEntries(widgets.map((w) => [w.name, w.value]));
      const form = this.targetForm();
      let field = form.querySelector('input[name="taskAnswers"]');
      if (!field) form.append(field = el("input", { type: "hidden", name: "taskAnswers" }));
      field.value = JSON.stringify([answers]);
      this.setBusy(true);
      // The prototype's submit: a field named "submit" would shadow form.submit.
      HTMLFormElement.prototype.submit.call(form);
      return true;
    }

    targetForm() {
      const action = this.getAttribute("action");
      const method = this.getAttribute("method");
      let form = this.closest("form") || this.querySelector(":scope > form.cbb-post");
      if (!form) {
        form = el("form", { class: "cbb-post", hidden: "" });
        for (const input of this.querySelectorAll('input[type="hidden"][name]')) form.append(input.cloneNode());
        this.append(form);
      }
      if (action) form.setAttribute("action", action);
      if (method) form.setAttribute("method", method);
      else if (!form.hasAttribute("method")) form.setAttribute("method", "post");
      return form;
    }
  }

  // Plain containers; <crowd-bounding-box> moves them into its instructions panel.
  customElements.define("short-instructions", class extends HTMLElement {});
  customElements.define("full-instructions", class extends HTMLElement {});
  customElements.define("crowd-bounding-box", CrowdBoundingBox);
  customElements.define("crowd-form", CrowdForm);
})();
