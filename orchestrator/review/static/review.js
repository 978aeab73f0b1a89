/*
 * The review page of `labeljob review` (docs/review.md). It reads the JSON API and fills the page
 * with text nodes only, so labels, worker ids and file names are never parsed as HTML. Boxes are
 * fixed with the same <crowd-bounding-box> element the workers use (crowd-bounding-box.js); each
 * worker's boxes are drawn over the image through the element's `overlays`. URLs are relative to
 * the page, so the same page works at `/` (labeljob review) and under the portal's `/review/<job>/`.
 */
(() => {
  "use strict";

  // One colour per worker, distinct from the element's label colours by being lighter.
  const WORKER_COLORS = ["#ff7f0e", "#17becf", "#bcbd22", "#e377c2", "#9467bd",
    "#8c8c00", "#f4a582", "#66c2a5", "#a6761d", "#7570b3"];

  const state = { summary: null, items: [], at: 0, shown: new Set(), undo: [] };
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    node.append(...children);
    return node;
  }

  function say(text, error = false) {
    $("status").textContent = text;
    $("status").classList.toggle("error", error);
  }

  async function api(path, body) {
    const init = body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    };
    const response = await fetch(path, init);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.message || `HTTP ${response.status}`);
    return data;
  }

  /** The file name of a source-ref, decoded for reading ("%3C" shows as "<", as text). */
  function fileName(ref) {
    const last = ref.split("/").pop();
    try {
      return decodeURIComponent(last);
    } catch {
      return last;
    }
  }

  function workerColor(workerId) {
    const i = state.summary.workers.indexOf(workerId);
    return WORKER_COLORS[(i < 0 ? 0 : i) % WORKER_COLORS.length];
  }

  function showCounts() {
    const c = state.summary.counts;
    $("counts").textContent =
      `${c.undecided} undecided · ${c.accept} accepted · ${c.fix} fixed · ${c.reject} rejected`;
  }

  async function loadSummary() {
    state.summary = await api("api/summary");
    $("manifest").textContent = `${state.summary.manifest} (${state.summary.attr})`;
    const form = $("filters");
    form.elements.label.append(...state.summary.labels.map((l) => new Option(l, l)));
    form.elements.worker.append(...state.summary.workers.map((w) => new Option(w, w)));
    showCounts();
  }

  async function loadItems() {
    const query = new URLSearchParams();
    for (const field of $("filters").elements) if (field.value) query.set(field.name, field.value);
    state.items = await api(`api/items?${query}`);
    state.at = 0;
    show();
  }

  function current() {
    return state.items[state.at];
  }

  function show() {
    const item = current();
    const editor = $("editor");
    if (!item) {
      editor.replaceChildren(el("p", {}, "No item matches these filters."));
      $("title").textContent = "";
      $("position").textContent = "";
      $("decision").textContent = "";
      $("workers").replaceChildren();
      $("consensus").replaceChildren();
      return;
    }
    const start = item.decision === "fix" ? item.fixed_boxes : item.boxes;
    const box = document.createElement("crowd-bounding-box");
    box.setAttribute("name", "review");
    box.setAttribute("src", `api/items/${item.index}/image`);
    box.setAttribute("header", fileName(item["source-ref"]));
    box.setAttribute("labels", JSON.stringify(state.summary.labels));
    box.setAttribute("initial-value", JSON.stringify(start.map(({ confidence, votes, ...b }) => b)));
    editor.replaceChildren(box);
    $("title").textContent = fileName(item["source-ref"]);
    $("title").title = item["source-ref"];
    $("position").textContent = `item ${state.at + 1} of ${state.items.length} · line ${item.index}`
      + (item.flags.length ? ` · ${item.flags.join(", ")}` : "");
    const decided = item.decision ? `${item.decision} by ${item.decided_by} at ${item.decided_at}` : "undecided";
    $("decision").textContent = `Decision: ${decided}`;
    $("decision").className = item.decision ? `decision-${item.decision}` : "";
    $("consensus").replaceChildren(...item.boxes.map((b) =>
      el("li", {}, `${b.label} ${b.confidence.toFixed(2)} (${b.left}, ${b.top}, ${b.width}×${b.height})`
        + (b.votes === undefined ? "" : ` · ${b.votes} of ${item.workers.length} workers`))));
    showWorkers(item, box);
  }

  function showWorkers(item, box) {
    const rows = item.workers.map((w) => {
      const toggle = el("input", { type: "checkbox", "data-worker": w.worker_id });
      toggle.checked = state.shown.has(w.worker_id);
      toggle.addEventListener("change", () => {
        if (toggle.checked) state.shown.add(w.worker_id);
        else state.shown.delete(w.worker_id);
        drawWorkers(item, box);
      });
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = workerColor(w.worker_id);
      return el("li", {}, el("label", {}, toggle, swatch, w.worker_id, ` (${w.boxes.length} boxes)`));
    });
    $("workers").replaceChildren(...(rows.length ? rows : [el("li", { class: "muted" }, "none given (--answers)")]));
    drawWorkers(item, box);
  }

  function drawWorkers(item, box) {
    box.overlays = item.workers.filter((w) => state.shown.has(w.worker_id))
      .map((w) => ({ name: w.worker_id, color: workerColor(w.worker_id), boxes: w.boxes }));
  }

  function move(step) {
    if (!state.items.length) return;
    state.at = Math.min(Math.max(state.at + step, 0), state.items.length - 1);
    show();
  }

  async function decide(action) {
    const item = current();
    if (!item) return;
    const body = { action };
    if (action === "fix") {
      const box = $("editor").querySelector("crowd-bounding-box");
      if (!box.loaded) return say("The image has not loaded yet.", true);
      body.boxes = box.value.boundingBoxes;
    }
    try {
      replace(await api(`api/items/${item.index}`, body));
    } catch (error) {
      return say(`Not saved: ${error.message}`, true);
    }
    state.undo.push(item.index);
    await refreshCounts();
    move(1);
    // Said last, so a script (or a test) that waits for the message finds the next item shown.
    say(`Line ${item.index}: ${action === "fix" ? "fixed" : `${action}ed`}.`);
  }

  async function undo() {
    const index = state.undo.pop();
    if (index === undefined) return say("Nothing to undo on this page.");
    try {
      replace(await api(`api/items/${index}`, { action: "undo" }));
    } catch (error) {
      return say(`Not undone: ${error.message}`, true);
    }
    const at = state.items.findIndex((i) => i.index === index);
    if (at >= 0) state.at = at;
    await refreshCounts();
    show();
    say(`Line ${index}: last decision undone.`);
  }

  function replace(item) {
    const at = state.items.findIndex((i) => i.index === item.index);
    if (at >= 0) state.items[at] = item;
  }

  async function refreshCounts() {
    state.summary.counts = (await api("api/summary")).counts;
    showCounts();
  }

  const ACTIONS = {
    previous: () => move(-1), next: () => move(1), accept: () => decide("accept"),
    fix: () => decide("fix"), reject: () => decide("reject"), undo: () => undo(),
  };
  const KEYS = { j: "next", n: "next", k: "previous", p: "previous", a: "accept", f: "fix", r: "reject", u: "undo" };

  document.addEventListener("DOMContentLoaded", async () => {
    for (const button of $("actions").querySelectorAll("button")) {
      button.addEventListener("click", () => ACTIONS[button.dataset.do]());
    }
    $("filters").addEventListener("change", () => loadItems().catch((e) => say(e.message, true)));
    document.addEventListener("keydown", (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey || e.target.closest?.("input, select, textarea")) return;
      const action = KEYS[e.key];
      if (!action) return;
      e.preventDefault();
      ACTIONS[action]();
    });
    try {
      await loadSummary();
      await loadItems();
    } catch (error) {
      say(`Could not load the review: ${error.message}`, true);
    }
  });
})();
