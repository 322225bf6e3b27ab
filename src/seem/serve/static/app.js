/* seem serve — the web page. Plain JavaScript, no build step.
 *
 * The image is uploaded once (POST /v1/sessions: the server encodes it and caches the features); every click,
 * box or stroke then sends only the prompt (POST /v1/sessions/{id}/segment or /granularity), so the server runs
 * only the decoder. Masks come back as COCO RLE and are drawn on a canvas over the image.
 */
"use strict";
(function () {
  // ------------------------------------------------------------------------------------------ helpers

  const $ = (id) => document.getElementById(id);
  const PALETTE = [
    [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
    [227, 119, 194], [188, 189, 34], [23, 190, 207], [255, 187, 120], [152, 223, 138], [255, 152, 150],
    [197, 176, 213], [196, 156, 148], [247, 182, 210], [219, 219, 141], [158, 218, 229], [57, 106, 177],
    [218, 124, 48], [62, 150, 81],
  ];
  const DRAG_PX = 5; // screen pixels before a press becomes a drag (box)

  const state = {
    key: sessionStorage.getItem("seem-api-key") || "",
    info: null,
    session: null, // {id, w, h}
    objects: new Map(), // id -> {id, kind, masks, selectedLevel, visible, color, bitmaps, marks}
    order: [],
    current: null, // object refined by the next prompt (interactive or granularity)
    history: [], // undo stack: {type: "round", id} | {type: "batch", ids}
    colorIndex: 0,
    ref: { session: null, img: null, points: [], scribbles: [] },
    queue: Promise.resolve(),
    pending: 0,
  };

  function setStatus(text, error) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", !!error);
  }

  function headers(json) {
    const h = {};
    if (json) h["Content-Type"] = "application/json";
    if (state.key) h["Authorization"] = "Bearer " + state.key;
    return h;
  }

  async function api(method, path, body, raw) {
    const opts = { method, headers: headers(body !== undefined && !(body instanceof FormData)) };
    if (body !== undefined) opts.body = body instanceof FormData ? body : JSON.stringify(body);
    const res = await fetch(path, opts);
    if (!res.ok) {
      let detail = res.status + " " + res.statusText;
      try {
        const j = await res.json();
        detail = j.detail || detail;
      } catch (e) { /* not JSON */ }
      const err = new Error(detail);
      err.status = res.status;
      throw err;
    }
    if (raw) return res;
    if (res.status === 204) return null;
    return res.json();
  }

  // Run actions one after another (rounds of one object must reach the server in order).
  function enqueue(label, fn) {
    state.pending += 1;
    document.body.dataset.busy = "1";
    const run = async () => {
      try {
        await fn();
      } catch (e) {
        setStatus(label + ": " + e.message, true);
      } finally {
        state.pending -= 1;
        if (state.pending === 0) delete document.body.dataset.busy;
      }
    };
    state.queue = state.queue.then(run);
    return state.queue;
  }

  // COCO compressed RLE (pycocotools' string format) -> run lengths.
  function rleCounts(s) {
    const cnts = [];
    let p = 0;
    while (p < s.length) {
      let x = 0, k = 0, more = 1;
      while (more) {
        const c = s.charCodeAt(p) - 48;
        x += (c & 0x1f) * Math.pow(2, 5 * k);
        more = c & 0x20;
        p++;
        k++;
        if (!more && (c & 0x10)) x -= Math.pow(2, 5 * k);
      }
      if (cnts.length > 2) x += cnts[cnts.length - 2];
      cnts.push(x);
    }
    return cnts;
  }

  // RLE -> an offscreen canvas with the mask filled in `color` (runs are column-major, zeros first).
  function maskBitmap(rle, color) {
    const [h, w] = rle.size;
    const counts = typeof rle.counts === "string" ? rleCounts(rle.counts) : rle.counts;
    const cv = document.createElement("canvas");
    cv.width = w;
    cv.height = h;
    const ctx = cv.getContext("2d");
    const img = ctx.createImageData(w, h);
    const d = img.data;
    let pos = 0;
    for (let i = 0; i < counts.length; i++) {
      const n = counts[i];
      if (i % 2 === 1) {
        for (let j = pos; j < pos + n; j++) {
          const y = j % h, x = (j - y) / h, o = (y * w + x) * 4;
          d[o] = color[0]; d[o + 1] = color[1]; d[o + 2] = color[2]; d[o + 3] = 130;
        }
      }
      pos += n;
    }
    ctx.putImageData(img, 0, 0);
    return cv;
  }

  // ------------------------------------------------------------------------------------------ canvases

  const imageCanvas = $("image"), overlay = $("overlay");
  const refCanvas = $("ref-image"), refOverlay = $("ref-overlay");
  let mainImage = null;

  function fitStage(stage, w, h, maxH) {
    const width = stage.parentElement.clientWidth || w;
    const scale = Math.min(3, width / w, maxH / h);
    stage.style.width = Math.round(w * scale) + "px";
    stage.style.height = Math.round(h * scale) + "px";
  }

  function layout() {
    if (state.session) fitStage($("stage"), state.session.w, state.session.h, window.innerHeight * 0.8);
    if (state.ref.img) fitStage($("ref-stage"), state.ref.img.width, state.ref.img.height, 260);
  }
  window.addEventListener("resize", layout);

  function toImage(canvas, ev) {
    const r = canvas.getBoundingClientRect();
    const x = ((ev.clientX - r.left) * canvas.width) / r.width;
    const y = ((ev.clientY - r.top) * canvas.height) / r.height;
    return [Math.min(Math.max(x, 0), canvas.width - 0.01), Math.min(Math.max(y, 0), canvas.height - 0.01)];
  }

  function currentMask(obj) {
    if (!obj.masks.length) return null;
    if (obj.kind === "granularity") {
      return obj.masks.find((m) => m.level === obj.selectedLevel) || obj.masks[0];
    }
    return obj.masks[0];
  }

  function bitmapFor(obj) {
    const m = currentMask(obj);
    if (!m || !m.segmentation) return null;
    const key = obj.kind === "granularity" ? "L" + m.level : "r" + obj.round;
    if (!obj.bitmaps.has(key)) obj.bitmaps.set(key, maskBitmap(m.segmentation, obj.color));
    return obj.bitmaps.get(key);
  }

  function drawMarks(ctx, marks, scale) {
    const r = Math.max(3, 5 * scale);
    ctx.lineWidth = Math.max(1.5, 2 * scale);
    for (const m of marks) {
      if (m.box) {
        const [x0, y0, x1, y1] = m.box;
        ctx.strokeStyle = "#ffd400";
        ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      }
      for (const s of m.scribbles || []) {
        ctx.strokeStyle = s.label ? "rgba(0,200,0,0.9)" : "rgba(230,0,0,0.9)";
        ctx.lineWidth = Math.max(2, 3 * scale);
        ctx.beginPath();
        s.points.forEach((p, i) => (i ? ctx.lineTo(p[0], p[1]) : ctx.moveTo(p[0], p[1])));
        ctx.stroke();
      }
      for (const p of m.points || []) {
        ctx.fillStyle = p[2] === 0 ? "#e00000" : "#00b400";
        ctx.strokeStyle = "#fff";
        ctx.beginPath();
        ctx.arc(p[0], p[1], r, 0, 2 * Math.PI);
        ctx.fill();
        ctx.stroke();
      }
    }
  }

  let preview = null; // {box} or {scribble} while dragging

  function render() {
    const ctx = overlay.getContext("2d");
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    let drawn = 0;
    for (const id of state.order) {
      const obj = state.objects.get(id);
      if (!obj || !obj.visible) continue;
      const bm = bitmapFor(obj);
      if (bm) {
        ctx.drawImage(bm, 0, 0);
        drawn++;
      }
    }
    const scale = overlay.width / Math.max(1, overlay.getBoundingClientRect().width);
    const cur = state.objects.get(state.current);
    if (cur) drawMarks(ctx, cur.marks, scale);
    if (preview) drawMarks(ctx, [preview], scale);
    overlay.dataset.masksDrawn = String(drawn);
    renderList();
  }

  function renderList() {
    const ul = $("masks");
    ul.textContent = "";
    state.order.forEach((id, i) => {
      const obj = state.objects.get(id);
      const m = currentMask(obj);
      const li = document.createElement("li");
      li.dataset.objectId = id;
      if (id === state.current) li.classList.add("current");
      const cb = document.createElement("input");
      cb.type = "checkbox";
      cb.checked = obj.visible;
      cb.title = "show / hide";
      cb.addEventListener("change", () => { obj.visible = cb.checked; render(); });
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = "rgb(" + obj.color.join(",") + ")";
      const name = document.createElement("span");
      name.className = "name";
      let label = m ? m.label || obj.kind : obj.kind + " (empty)";
      if (obj.kind === "granularity" && m) label = "level " + m.level;
      name.textContent = i + 1 + ". " + label;
      name.title = obj.prompts || obj.kind;
      name.addEventListener("click", () => {
        if (obj.kind === "interactive" || obj.kind === "granularity") {
          state.current = id;
          $("gran-mode").checked = obj.kind === "granularity";
          if (obj.kind === "granularity" && obj.selectedLevel) $("gran").value = obj.selectedLevel;
          render();
        }
      });
      const meta = document.createElement("span");
      meta.className = "meta";
      if (m) {
        const score = m.label_score != null ? m.label_score : m.score;
        meta.textContent = (score != null ? score.toFixed(2) + " · " : "") + m.area + " px";
      }
      const del = document.createElement("button");
      del.textContent = "×";
      del.title = "delete";
      del.addEventListener("click", () => enqueue("delete", () => removeObject(id, true)));
      li.append(cb, sw, name, meta, del);
      ul.append(li);
    });
  }

  // ------------------------------------------------------------------------------------------ objects

  function nextColor() {
    const c = PALETTE[state.colorIndex % PALETTE.length];
    state.colorIndex++;
    return c;
  }

  function upsert(out) {
    let obj = state.objects.get(out.object_id);
    if (!obj) {
      obj = { id: out.object_id, kind: out.kind, visible: true, color: nextColor(), bitmaps: new Map(), marks: [] };
      state.objects.set(obj.id, obj);
      state.order.push(obj.id);
    }
    obj.masks = out.masks;
    obj.round = out.round;
    obj.prompts = out.prompts;
    if (out.kind === "granularity") {
      const want = Number($("gran").value);
      obj.selectedLevel = out.masks.some((m) => m.level === want) ? want : out.selected_level;
    }
    return obj;
  }

  async function removeObject(id, remote) {
    if (remote && state.session) await api("DELETE", "/v1/sessions/" + state.session.id + "/objects/" + id);
    state.objects.delete(id);
    state.order = state.order.filter((x) => x !== id);
    state.history = state.history.filter((h) => h.id !== id);
    if (state.current === id) state.current = null;
    render();
  }

  function clearObjects() {
    state.objects.clear();
    state.order = [];
    state.history = [];
    state.current = null;
    state.colorIndex = 0;
  }

  // ------------------------------------------------------------------------------------------ sessions

  async function upload(file) {
    const fd = new FormData();
    fd.append("image", file, file.name);
    return api("POST", "/v1/sessions", fd);
  }

  function loadImage(file) {
    return new Promise((resolve, reject) => {
      const url = URL.createObjectURL(file);
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("the browser cannot display this image"));
      img.src = url;
    });
  }

  async function openImage(file) {
    setStatus("Uploading and encoding " + file.name + "…");
    document.body.dataset.state = "loading";
    const t0 = performance.now();
    const [img, out] = await Promise.all([loadImage(file), upload(file)]);
    if (state.session) api("DELETE", "/v1/sessions/" + state.session.id).catch(() => {});
    state.session = { id: out.session_id, w: out.width, h: out.height };
    mainImage = img;
    clearObjects();
    for (const c of [imageCanvas, overlay]) {
      c.width = out.width;
      c.height = out.height;
    }
    imageCanvas.getContext("2d").drawImage(img, 0, 0, out.width, out.height);
    layout();
    render();
    document.body.dataset.state = "ready";
    document.body.dataset.session = out.session_id;
    setStatus(out.width + "×" + out.height + " encoded in " + Math.round(performance.now() - t0) + " ms. Click on the image.");
  }

  // ------------------------------------------------------------------------------------------ prompts

  function granularityOn() {
    return $("gran-mode").checked;
  }

  function sendPrompt(prompts, mark) {
    if (!state.session) return;
    const sid = state.session.id;
    const gran = granularityOn();
    let cur = state.objects.get(state.current);
    if (cur && cur.kind !== (gran ? "granularity" : "interactive")) cur = null;
    // show the prompt at once; the mask follows
    preview = mark;
    render();
    return enqueue(gran ? "granularity" : "segment", async () => {
      const t0 = performance.now();
      let out;
      try {
        if (gran) {
          const body = { object_id: cur ? cur.id : null, level: Number($("gran").value) };
          if (prompts.points) body.points = prompts.points;
          if (prompts.boxes) body.box = prompts.boxes[0];
          if (prompts.scribbles) {
            throw new Error("scribbles are not granularity prompts; use clicks or a box");
          }
          out = await api("POST", "/v1/sessions/" + sid + "/granularity", body);
        } else {
          out = await api("POST", "/v1/sessions/" + sid + "/segment", { object_id: cur ? cur.id : null, prompts });
        }
      } finally {
        preview = null;
      }
      const obj = upsert(out);
      obj.marks.push(mark);
      state.current = obj.id;
      state.history.push({ type: "round", id: obj.id });
      render();
      const m = currentMask(obj);
      setStatus(
        (m && m.label ? m.label + " · " : "") + "round " + out.round + " in " +
        Math.round(performance.now() - t0) + " ms (server " + Math.round(out.timing_ms || 0) + " ms)"
      );
    });
  }

  function pointerHandlers(canvas, onClick, onBox, onStroke) {
    let down = null;
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    canvas.addEventListener("pointerdown", (ev) => {
      if (ev.button !== 0 && ev.button !== 2) return;
      canvas.setPointerCapture(ev.pointerId);
      down = { x: ev.clientX, y: ev.clientY, p: toImage(canvas, ev), button: ev.button, drag: false, path: [toImage(canvas, ev)] };
    });
    canvas.addEventListener("pointermove", (ev) => {
      if (!down) return;
      if (!down.drag && Math.hypot(ev.clientX - down.x, ev.clientY - down.y) > DRAG_PX) down.drag = true;
      if (!down.drag) return;
      const p = toImage(canvas, ev);
      down.path.push(p);
      if (onStroke && brushOn()) onStroke(down, true);
      else if (onBox) onBox(down, p, true);
    });
    canvas.addEventListener("pointerup", (ev) => {
      if (!down) return;
      const d = down;
      down = null;
      const negative = d.button === 2 || $("negative").checked;
      if (!d.drag) onClick(d.p, negative);
      else if (onStroke && brushOn()) onStroke(d, false, negative);
      else if (onBox) onBox(d, toImage(canvas, ev), false);
    });
  }

  function brushOn() {
    return document.querySelector("input[name=tool]:checked").value === "brush";
  }

  function boxOf(a, b) {
    return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  }

  pointerHandlers(
    overlay,
    (p, negative) => {
      if (brushOn()) {
        const s = { points: [p], label: negative ? 0 : 1 };
        return sendPrompt({ scribbles: [s] }, { scribbles: [s] });
      }
      const pt = [p[0], p[1], negative ? 0 : 1];
      sendPrompt({ points: [pt] }, { points: [pt] });
    },
    (d, p, live) => {
      const box = boxOf(d.p, p);
      if (live) {
        preview = { box };
        render();
        return;
      }
      preview = null;
      if (box[2] - box[0] < 1 || box[3] - box[1] < 1) return render();
      sendPrompt({ boxes: [box] }, { box });
    },
    (d, live, negative) => {
      const s = { points: d.path, label: negative ? 0 : 1 };
      if (live) {
        preview = { scribbles: [{ points: d.path, label: d.button === 2 || $("negative").checked ? 0 : 1 }] };
        render();
        return;
      }
      sendPrompt({ scribbles: [s] }, { scribbles: [s] });
    }
  );

  // ------------------------------------------------------------------------------------------ buttons

  $("file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    if (f) enqueue("upload", () => openImage(f));
    e.target.value = "";
  });

  $("new-object").addEventListener("click", () => {
    state.current = null;
    render();
    setStatus("The next prompt starts a new object.");
  });

  async function undo() {
    const h = state.history.pop();
    if (!h || !state.session) return setStatus("Nothing to undo.");
    const sid = state.session.id;
    if (h.type === "batch") {
      for (const id of h.ids) await removeObject(id, true);
      return setStatus("Removed " + h.ids.length + " masks.");
    }
    const obj = state.objects.get(h.id);
    if (!obj) return;
    const out = await api("POST", "/v1/sessions/" + sid + "/objects/" + h.id + "/undo");
    obj.marks.pop();
    if (out.round === 0) {
      await removeObject(h.id, true);
    } else {
      upsert(out);
      state.current = h.id;
      render();
    }
    setStatus("Undone.");
  }

  $("undo").addEventListener("click", () => enqueue("undo", undo));
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "TEXTAREA") return;
    if ((e.ctrlKey || e.metaKey) && e.key === "z") {
      e.preventDefault();
      enqueue("undo", undo);
    } else if (e.key === "n") {
      $("new-object").click();
    }
  });

  $("reset").addEventListener("click", () =>
    enqueue("reset", async () => {
      if (!state.session) return;
      await api("POST", "/v1/sessions/" + state.session.id + "/reset");
      clearObjects();
      render();
      setStatus("Every mask deleted.");
    })
  );

  $("gran").addEventListener("input", () => {
    const cur = state.objects.get(state.current);
    if (cur && cur.kind === "granularity") {
      const want = Number($("gran").value);
      if (cur.masks.some((m) => m.level === want)) cur.selectedLevel = want;
      render();
    }
  });

  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (!text || !state.session) return;
    const sid = state.session.id;
    enqueue("text", async () => {
      const t0 = performance.now();
      const out = await api("POST", "/v1/sessions/" + sid + "/segment", { object_id: null, prompts: { text } });
      const obj = upsert(out);
      state.history.push({ type: "round", id: obj.id });
      state.current = null;
      render();
      setStatus("'" + text + "' in " + Math.round(performance.now() - t0) + " ms");
    });
  });

  async function batch(kind, path, body) {
    const t0 = performance.now();
    const out = await api("POST", "/v1/sessions/" + state.session.id + path, body);
    const ids = out.objects.map((o) => upsert(o).id);
    if (ids.length) state.history.push({ type: "batch", ids });
    state.current = null;
    render();
    setStatus(kind + ": " + ids.length + " masks in " + Math.round(performance.now() - t0) + " ms");
  }

  $("panoptic").addEventListener("click", () => {
    if (!state.session) return;
    const names = $("classes").value.split("\n").map((s) => s.trim()).filter(Boolean);
    const stuff = $("stuff").value.split(",").map((s) => s.trim()).filter(Boolean);
    const body = {};
    if (names.length) body.class_names = names;
    if (stuff.length) body.stuff_classes = stuff;
    enqueue("panoptic", () => batch("panoptic", "/panoptic", body));
  });

  $("everything").addEventListener("click", () => {
    if (!state.session) return;
    const pps = Math.max(1, Number($("pps").value) || 16);
    setStatus("Segmenting everything…");
    enqueue("everything", () => batch("everything", "/everything", { points_per_side: pps }));
  });

  function download(blob, name) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  function exportBody(format) {
    const objects = state.order
      .map((id) => state.objects.get(id))
      .filter((o) => o.visible && o.masks.length)
      .map((o) => (o.kind === "granularity" ? { object_id: o.id, level: o.selectedLevel } : { object_id: o.id }));
    return { format, objects };
  }

  for (const [id, format] of [["dl-png", "png"], ["dl-coco", "coco"]]) {
    $(id).addEventListener("click", () => {
      if (!state.session) return;
      enqueue("download", async () => {
        const res = await api("POST", "/v1/sessions/" + state.session.id + "/export", exportBody(format), true);
        const cd = res.headers.get("content-disposition") || "";
        const m = /filename="([^"]+)"/.exec(cd);
        download(await res.blob(), m ? m[1] : "masks." + (format === "png" ? "png" : "json"));
      });
    });
  }

  // ------------------------------------------------------------------------------------------ reference

  function renderRef() {
    const ctx = refOverlay.getContext("2d");
    ctx.clearRect(0, 0, refOverlay.width, refOverlay.height);
    const scale = refOverlay.width / Math.max(1, refOverlay.getBoundingClientRect().width);
    drawMarks(ctx, [{ points: state.ref.points, scribbles: state.ref.scribbles }], scale);
  }

  $("ref-file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    e.target.value = "";
    if (!f) return;
    enqueue("example image", async () => {
      const [img, out] = await Promise.all([loadImage(f), upload(f)]);
      if (state.ref.session) api("DELETE", "/v1/sessions/" + state.ref.session).catch(() => {});
      state.ref = { session: out.session_id, img, points: [], scribbles: [] };
      for (const c of [refCanvas, refOverlay]) {
        c.width = out.width;
        c.height = out.height;
      }
      refCanvas.getContext("2d").drawImage(img, 0, 0, out.width, out.height);
      layout();
      renderRef();
      setStatus("Example loaded: mark the object on it, then 'Find it here'.");
    });
  });

  pointerHandlers(
    refOverlay,
    (p, negative) => {
      state.ref.points.push([p[0], p[1], negative ? 0 : 1]);
      renderRef();
    },
    null,
    (d, live, negative) => {
      if (live) return;
      state.ref.scribbles.push({ points: d.path, label: negative ? 0 : 1 });
      renderRef();
    }
  );

  $("ref-clear").addEventListener("click", () => {
    state.ref.points = [];
    state.ref.scribbles = [];
    renderRef();
  });

  $("ref-go").addEventListener("click", () => {
    if (!state.session || !state.ref.session) return setStatus("Open an image and an example image first.", true);
    const prompts = {};
    if (state.ref.points.length) prompts.points = state.ref.points;
    if (state.ref.scribbles.length) prompts.scribbles = state.ref.scribbles;
    enqueue("example", async () => {
      const out = await api("POST", "/v1/sessions/" + state.session.id + "/segment", {
        object_id: null,
        prompts: { reference: { session_id: state.ref.session, prompts } },
      });
      const obj = upsert(out);
      state.history.push({ type: "round", id: obj.id });
      state.current = null;
      render();
      setStatus("Found by example in " + Math.round(out.timing_ms || 0) + " ms (server).");
    });
  });

  // ------------------------------------------------------------------------------------------ start

  async function start() {
    const health = await (await fetch("/healthz")).json();
    if (health.auth_required) {
      const k = $("apikey");
      $("key-form").hidden = false;
      $("key-form").addEventListener("submit", (e) => e.preventDefault());
      k.value = state.key;
      k.addEventListener("change", () => {
        state.key = k.value.trim();
        sessionStorage.setItem("seem-api-key", state.key);
        loadInfo();
      });
    }
    await loadInfo();
  }

  async function loadInfo() {
    try {
      state.info = await api("GET", "/v1/info");
    } catch (e) {
      return setStatus(e.status === 401 ? "Enter the API key (top right)." : "Server: " + e.message, true);
    }
    const fam = state.info.families;
    const hasGran = !!fam.semantic_sam, hasSeem = !!fam.seem;
    $("granularity-box").disabled = !hasGran;
    $("gran-note").textContent = hasGran ? "" : "needs a Semantic-SAM model (--granularity-model)";
    if (hasGran && !hasSeem) $("gran-mode").checked = true;
    $("gran-mode").disabled = !hasSeem;
    $("panoptic-box").disabled = !hasSeem;
    $("text-form").querySelector("button").disabled = !hasSeem;
    $("ref-go").disabled = !hasSeem;
    document.body.dataset.families = Object.keys(fam).join(",");
  }

  window.seemPage = { state, render, rleCounts }; // for debugging and tests
  start();
})();
