// multimae demo page: plain JavaScript, no build step, nothing loaded from elsewhere.
// Everything it shows comes from the API: the model's family, its inputs and outputs (names, how
// each is drawn and edited), its classes; no modality is named here.
"use strict";

const $ = (id) => document.getElementById(id);
const CANVAS = 256; // drawn size of a tile, pixels

// Timings of "a change -> every picture updated", read by the tests and the benchmark.
window.demo = { timings: [], updates: 0, busy: false };

function showMessage(text, isError) {
  const box = $("message");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = !text;
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body instanceof FormData) {
    options.body = body;
  } else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const message = (data && data.error) || `${response.status} ${response.statusText}`;
    showMessage(message, true);
    throw new Error(message);
  }
  return data;
}

// ---------------------------------------------------------------------------------- MultiMAE view

function multimaeView(info) {
  const [gridH, gridW] = info.grid;
  window.demo.grid = info.grid;
  const tokens = gridH * gridW;
  const classes = info.classes;
  let state = { inputs: {}, masks: {}, outputs: {}, pasted: {}, texts: {}, captions: {} };
  let masks = {};        // the page's masks: {name: [[0/1]]}, sent to the server on change
  let pending = false;   // a mask change not sent yet
  let changeStart = null;
  const tiles = {};

  function tool() { return document.querySelector("input[name=tool]:checked").value; }

  // ---- tiles of the inputs (every model input, given or not) and of the outputs
  for (const spec of info.inputs) {
    const tile = document.createElement("div");
    tile.className = "tile absent";
    tile.dataset.modality = spec.name;
    tile.innerHTML = `<h3><span>${spec.name}</span><span class="visible"></span></h3>`;
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = CANVAS;
    canvas.dataset.modality = spec.name;
    tile.appendChild(canvas);
    const buttons = document.createElement("div");
    buttons.className = "row";
    buttons.innerHTML = `<button data-act="all" title="mask every token">all</button>` +
      `<button data-act="none" title="mask no token">none</button>` +
      `<button data-act="remove" title="do not give this input">✕</button>`;
    tile.appendChild(buttons);
    const editRow = document.createElement("div");
    editRow.className = "row";
    editRow.appendChild(editorControl(spec));
    tile.appendChild(editRow);
    const upload = document.createElement("div");
    upload.className = "row";
    upload.innerHTML = `<label>upload <input type="file" accept="image/*" data-modality="${spec.name}"></label>`;
    if (spec.upload) upload.title = spec.upload;
    tile.appendChild(upload);
    const source = document.createElement("div");
    source.className = "source";
    tile.appendChild(source);
    $("inputs").appendChild(tile);
    tiles[spec.name] = { tile, canvas, source, spec, image: null };
    buttons.addEventListener("click", (ev) => tileButton(spec.name, ev.target.dataset.act));
    upload.querySelector("input").addEventListener("change", (ev) => uploadFile(spec.name, ev.target));
    attachPointer(spec.name, canvas);
  }
  for (const spec of info.outputs) {
    const tile = document.createElement("div");
    tile.className = "tile";
    tile.dataset.modality = spec.name;
    tile.innerHTML = `<h3><span>${spec.name}</span><span class="units"></span></h3><img alt="${spec.name} prediction">`;
    $("outputs").appendChild(tile);
  }

  // ---- text inputs (M3AE's caption): a text box, a chip per word (click: mask / unmask it), the
  // predicted words at the masked ones, the caption generated when none is given
  const texts = {};
  for (const spec of info.texts || []) {
    const box = document.createElement("fieldset");
    box.className = "text";
    box.dataset.modality = spec.name;
    box.innerHTML = `<legend>${spec.name} <small>(at most ${spec.max_length} word pieces; ` +
      `click a word to mask it: the model predicts it)</small></legend>` +
      `<textarea class="text-value" rows="2" aria-label="${spec.name}"></textarea>` +
      `<div class="row"><button data-act="set" title="give this text (Enter)">Use this ${spec.name}</button>` +
      `<button data-act="all" title="mask every word">mask all words</button>` +
      `<button data-act="none" title="mask no word">mask none</button>` +
      `<button data-act="remove" title="give no ${spec.name}: the model writes one from the other inputs">` +
      `${spec.name} from the image alone</button></div>` +
      `<div class="chips"></div><div class="predicted-text"></div><div class="source"></div>`;
    $("texts").appendChild(box);
    $("texts").hidden = false;
    const area = box.querySelector("textarea");
    texts[spec.name] = { box, spec, area, chips: box.querySelector(".chips"),
                         predicted: box.querySelector(".predicted-text"), source: box.querySelector(".source") };
    box.querySelector(".row").addEventListener("click", (ev) => textButton(spec.name, ev.target.dataset.act));
    area.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); textButton(spec.name, "set"); }
    });
    box.querySelector(".chips").addEventListener("click", (ev) => {
      const chip = ev.target.closest(".chip");
      if (chip) toggleWord(spec.name, Number(chip.dataset.index));
    });
  }

  function textButton(name, act) {
    if (!act) return;
    const path = `/api/texts/${encodeURIComponent(name)}`;
    if (act === "set") { run("POST", path, { text: texts[name].area.value }); return; }
    if (act === "remove") { run("DELETE", `/api/inputs/${encodeURIComponent(name)}`); return; }
    if (!(state.texts || {})[name]) { showMessage(`no ${name} given: type one and press Enter`, true); return; }
    run("POST", `${path}/masks`, () => ({ masked: wordMasks(name).map(() => (act === "all" ? 1 : 0)) }));
  }

  // The word masks as they are when a request is sent (after the answers to earlier clicks).
  function wordMasks(name) {
    const given = (state.texts || {})[name];
    return given ? given.masked.slice() : [];
  }

  function toggleWord(name, index) {
    run("POST", `/api/texts/${encodeURIComponent(name)}/masks`, () => {
      const masked = wordMasks(name);
      masked[index] = masked[index] ? 0 : 1;
      return { masked };
    });
  }

  function drawTexts(next) {
    for (const name of Object.keys(texts)) {
      const t = texts[name];
      const given = (next.texts || {})[name];
      t.box.classList.toggle("absent", !given);
      if (given && document.activeElement !== t.area) t.area.value = given.words.join(" ");
      t.source.textContent = given ? given.source : `no ${name} given`;
      t.chips.innerHTML = "";
      if (given) {
        given.words.forEach((word, i) => {
          const chip = document.createElement("button");
          chip.className = given.masked[i] ? "chip masked" : "chip";
          chip.dataset.index = i;
          chip.title = given.masked[i] ? `${word}: masked, click to give it` : "click to mask this word";
          chip.textContent = given.masked[i] ? "[MASK]" : word;
          if (given.masked[i] && given.predicted[i] !== null) {
            const p = document.createElement("span");
            p.className = "predicted";
            p.textContent = given.predicted[i];
            chip.appendChild(p);
          }
          t.chips.appendChild(chip);
        });
      }
      const lines = t.spec.outputs.filter((o) => next.captions && next.captions[o]).map((o) => {
        const c = next.captions[o];
        return c.given === null ? `${o} from the other inputs alone: ${c.text}`
          : (c.words.length ? `${o} with the predicted words: ${c.marked}` : "");
      }).filter((line) => line);
      t.predicted.textContent = lines.join("\n");
    }
  }

  function editorControl(spec) {
    const wrap = document.createElement("label");
    if (spec.editor === "color") {
      wrap.innerHTML = `colour <input type="color" class="edit-value" value="#ff0000">`;
    } else if (spec.editor === "class") {
      const options = classes.map((c) => `<option value="${c.id}" style="background: rgb(${c.color})">` +
        `${c.id} ${c.name}</option>`).join("");
      wrap.innerHTML = `class <select class="edit-value">${options}</select>`;
    } else if (spec.editor === "value") {
      wrap.innerHTML = `value <input type="number" step="any" class="edit-value" size="6">`;
    } else {
      wrap.textContent = "not editable on this page";
    }
    return wrap;
  }

  function editValue(name) {
    const spec = tiles[name].spec;
    const control = tiles[name].tile.querySelector(".edit-value");
    if (!control) return null;
    if (spec.editor === "color") {
      const hex = control.value;
      return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
    }
    return [Number(control.value)];
  }

  // ---- drawing
  function drawInput(name) {
    const { canvas, image } = tiles[name];
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, CANVAS, CANVAS);
    if (!image) {
      ctx.fillStyle = "#888";
      ctx.font = "16px sans-serif";
      ctx.fillText("not given", 90, 130);
      return;
    }
    ctx.drawImage(image, 0, 0, CANVAS, CANVAS);
    const m = masks[name];
    const cw = CANVAS / gridW, ch = CANVAS / gridH;
    ctx.fillStyle = "rgba(128, 128, 128, 0.85)";
    for (let i = 0; i < gridH; i++) {
      for (let j = 0; j < gridW; j++) {
        if (m && m[i][j]) ctx.fillRect(j * cw, i * ch, cw, ch);
      }
    }
    ctx.strokeStyle = "rgba(255, 255, 255, 0.35)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let i = 1; i < gridH; i++) { ctx.moveTo(0, i * ch); ctx.lineTo(CANVAS, i * ch); }
    for (let j = 1; j < gridW; j++) { ctx.moveTo(j * cw, 0); ctx.lineTo(j * cw, CANVAS); }
    ctx.stroke();
  }

  function loadImage(src) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = reject;
      img.src = src;
    });
  }

  function countVisible() {
    let visible = 0, total = 0;
    for (const name of Object.keys(masks)) {
      const v = masks[name].flat().filter((x) => !x).length;
      visible += v; total += tokens;
      tiles[name].tile.querySelector(".visible").textContent = `${v} / ${tokens} visible`;
    }
    for (const name of Object.keys(tiles)) {
      if (!(name in masks)) tiles[name].tile.querySelector(".visible").textContent = "";
    }
    $("visible-count").textContent = `${visible} of ${total} tokens visible`;
    const slider = $("num-visible");
    slider.max = Math.max(total, 1);
    return visible;
  }

  async function applyState(next) {
    state = next;
    // The server's masks, except where the page has changed them since (not sent yet: they go next).
    const merged = {};
    for (const name of Object.keys(next.masks)) {
      merged[name] = pending && masks[name] ? masks[name] : JSON.parse(JSON.stringify(next.masks[name]));
    }
    masks = merged;
    const paste = $("paste").checked;
    const loads = [];
    for (const name of Object.keys(tiles)) {
      const given = next.inputs[name];
      tiles[name].tile.classList.toggle("absent", !given);
      tiles[name].source.textContent = given ? given.source : "";
      if (given) {
        loads.push(loadImage(given.picture).then((img) => { tiles[name].image = img; }));
        const control = tiles[name].tile.querySelector("input.edit-value[type=number]");
        if (control && control.value === "" && given.range) control.value = ((given.range[0] + given.range[1]) / 2).toPrecision(4);
      } else {
        tiles[name].image = null;
      }
    }
    for (const tile of $("outputs").children) {
      const name = tile.dataset.modality;
      const img = tile.querySelector("img");
      const src = (paste && next.pasted[name]) || next.outputs[name] || "";
      tile.querySelector(".units").textContent = "";
      tile.title = next.units[name] || "";
      if (src) {
        img.src = src;
        loads.push(img.decode().catch(() => null));
      } else {
        img.removeAttribute("src");
      }
    }
    await Promise.all(loads);
    drawTexts(next);
    for (const name of Object.keys(tiles)) drawInput(name);
    const visible = countVisible();
    $("num-visible-value").textContent = $("num-visible").value;
    $("notes").innerHTML = "";
    for (const note of next.notes) {
      const li = document.createElement("li");
      li.textContent = note;
      $("notes").appendChild(li);
    }
    $("status").textContent = Object.keys(next.inputs).length + Object.keys(next.texts || {}).length
      ? `model + pictures: ${next.elapsed_ms} ms on the server; ${visible} tokens visible`
      : "no input: load a scene or upload an image";
    window.demo.updates += 1;
  }

  // Every request goes through here, one after the other (in the order made); the answer
  // replaces the state. window.demo.busy: a request queued or running, or a mask change not sent.
  let chain = Promise.resolve();
  let queued = 0;
  let maskLoop = false;
  function setBusy() { window.demo.busy = queued > 0 || pending || maskLoop; }

  function run(method, path, body) {
    queued += 1;
    setBusy();
    const next = chain.then(() => request(method, path, body));
    chain = next.catch(() => false);
    return next;
  }

  async function request(method, path, body) {
    try {
      // A body given as a function is made when sent: the masks as they are then.
      const next = await api(method, path, typeof body === "function" ? body() : body);
      showMessage("", false);
      await applyState(next);

      return true;
    } catch (err) {
      // The message is on the page; the server kept its state: show it again.
      masks = JSON.parse(JSON.stringify(state.masks));
      drawTexts(state);
      for (const name of Object.keys(tiles)) drawInput(name);
      countVisible();
      return false;
    } finally {
      queued -= 1;
      setBusy();
    }
  }

  // Mask changes: drawn at once, sent one request at a time (the latest masks win).
  async function masksChanged() {
    if (changeStart === null) changeStart = performance.now();
    pending = true;
    setBusy();
    for (const name of Object.keys(tiles)) drawInput(name);
    countVisible();
    if (maskLoop) return;
    maskLoop = true;
    let ok = true;
    while (pending && ok) {
      // The change counts as sent when its request is made, not when it is queued: an answer to an
      // earlier request (a scene, an edit) that arrives in between keeps the page's masks.
      ok = await run("POST", "/api/masks", () => { pending = false; return { masks }; });
    }
    maskLoop = false;
    if (ok && changeStart !== null) window.demo.timings.push(performance.now() - changeStart);
    changeStart = null;
    setBusy();
  }

  function cellAt(canvas, ev) {
    const r = canvas.getBoundingClientRect();
    const x = (ev.clientX - r.left) / r.width, y = (ev.clientY - r.top) / r.height;
    return { row: Math.min(gridH - 1, Math.max(0, Math.floor(y * gridH))),
             col: Math.min(gridW - 1, Math.max(0, Math.floor(x * gridW))),
             px: x * info.image_size, py: y * info.image_size };
  }

  function attachPointer(name, canvas) {
    let paintValue = null;
    let lastBrush = 0;
    canvas.addEventListener("pointerdown", (ev) => {
      if (!state.inputs[name]) return;
      const c = cellAt(canvas, ev);
      const t = tool();
      if (t === "mask") {
        paintValue = masks[name][c.row][c.col] ? 0 : 1;
        masks[name][c.row][c.col] = paintValue;
        canvas.setPointerCapture(ev.pointerId);
        masksChanged();
      } else if (t === "patch") {
        edit(name, { patch: [c.row, c.col] });
      } else {
        canvas.setPointerCapture(ev.pointerId);
        paintValue = 1;
        brush(name, c);
      }
    });
    canvas.addEventListener("pointermove", (ev) => {
      if (paintValue === null || !state.inputs[name]) return;
      const c = cellAt(canvas, ev);
      if (tool() === "mask") {
        if (masks[name][c.row][c.col] !== paintValue) {
          masks[name][c.row][c.col] = paintValue;
          masksChanged();
        }
      } else if (tool() === "brush" && queued === 0 && performance.now() - lastBrush > 30) {
        lastBrush = performance.now();
        brush(name, c);
      }
    });
    const stop = () => { paintValue = null; };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
  }

  function brush(name, c) {
    const radius = Number($("brush-radius").value); // pixels of the model's image
    edit(name, { brush: [Math.min(c.px, info.image_size - 0.01), Math.min(c.py, info.image_size - 0.01), radius] });
  }

  function edit(name, where) {
    const value = editValue(name);
    if (value === null) { showMessage(`${name} is not editable on this page`, true); return; }
    run("POST", "/api/edit", { name, value, ...where });
  }

  function tileButton(name, act) {
    if (!act) return;
    if (act === "remove") { run("DELETE", `/api/inputs/${encodeURIComponent(name)}`); return; }
    if (!masks[name]) return;
    const v = act === "all" ? 1 : 0;
    masks[name] = masks[name].map((row) => row.map(() => v));
    masksChanged();
  }

  async function uploadFile(name, input) {
    const file = input.files[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file, file.name);
    await run("POST", `/api/inputs/${encodeURIComponent(name)}`, form);
    input.value = "";
  }

  // ---- controls
  for (const split of info.world.splits) {
    const o = document.createElement("option");
    o.value = o.textContent = split;
    if (split === "val") o.selected = true;
    $("split").appendChild(o);
  }
  $("scene-index").max = info.world.scenes - 1;
  $("load-scene").addEventListener("click", () =>
    run("POST", "/api/scene", { split: $("split").value, index: Number($("scene-index").value) }));
  $("random-scene").addEventListener("click", async () => {
    await run("POST", "/api/scene", { split: $("split").value, index: null });
  });
  $("clear-inputs").addEventListener("click", () => run("DELETE", "/api/inputs"));
  $("reset-inputs").addEventListener("click", () => run("POST", "/api/reset"));
  $("num-visible").addEventListener("input", () => { $("num-visible-value").textContent = $("num-visible").value; });
  $("num-visible").addEventListener("change", () => randomMask());
  $("random-mask").addEventListener("click", () => randomMask());
  $("paste").addEventListener("change", () => applyState(state));
  $("download").addEventListener("click", (ev) => {
    if (!Object.keys(state.inputs).length) { ev.preventDefault(); showMessage("nothing to download yet", true); }
  });

  function randomMask() {
    run("POST", "/api/masks/random", { num_visible: Number($("num-visible").value),
                                       alpha: Number($("alpha").value), seed: null });
  }

  $("view-multimae").hidden = false;
  return (async () => {
    const current = await api("GET", "/api/state");
    if (!Object.keys(current.inputs).length && info.inputs.some((s) => s.from_world)) {
      await run("POST", "/api/scene", { split: "val", index: 0 });
    } else {
      await applyState(current);
    }
    // A sixth of the tokens: what MultiMAE trains with (98 of 588; the CPU preset's 32 of 192).
    $("num-visible").value = Math.max(1, Math.round(countVisible() / 6));
    $("num-visible-value").textContent = $("num-visible").value;
  })();
}

// ---------------------------------------------------------------------------------- the page

// M3AE's view is MultiMAE's with its text inputs (info.texts: a caption box and word chips); 4M's joins here.
const VIEWS = { multimae: multimaeView, m3ae: multimaeView };

async function main() {
  const info = await api("GET", "/api/info");
  $("model").textContent = `${info.checkpoint}: ${info.description}`;
  document.body.dataset.family = info.family;
  const view = VIEWS[info.family];
  if (!info.view_available || !view) {
    showMessage(info.message || `no view for ${info.family} models yet`, false);
    window.demo.ready = true;
    return;
  }
  await view(info);
  window.demo.ready = true;
}

main().catch((err) => { showMessage(String(err.message || err), true); window.demo.ready = true; });
