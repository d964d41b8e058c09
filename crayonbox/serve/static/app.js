// crayonbox page: POST /v1/generate/stream, read the server-sent events, fill a 3×3 grid as images sharpen.
// No framework, no build step. User-supplied text only ever reaches the page through textContent.
"use strict";

const N_IMAGES = 9;
const $ = (id) => document.getElementById(id);
const form = $("prompt-form");
const promptBox = $("prompt");
const runButton = $("run");
const statusLine = $("status");
const grid = $("grid");
let running = null; // AbortController of the request in flight
let lastResult = null;

function setStatus(text, kind = "") {
  statusLine.textContent = text;
  statusLine.className = kind;
}

function makeCells() {
  grid.replaceChildren();
  const cells = [];
  for (let i = 0; i < N_IMAGES; i++) {
    const figure = document.createElement("figure");
    figure.className = "cell waiting";
    const img = document.createElement("img");
    img.alt = "";
    img.addEventListener("load", () => img.classList.toggle("pixelated", img.naturalWidth < 128));
    const caption = document.createElement("figcaption");
    figure.append(img, caption);
    grid.append(figure);
    cells.push({ figure, img, caption });
  }
  return cells;
}

function showImages(cells, images, mime) {
  images.forEach((b64, i) => {
    if (!cells[i]) return;
    cells[i].img.src = `data:${mime};base64,${b64}`;
    cells[i].figure.classList.remove("waiting");
  });
}

function slug(text) {
  const s = text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 60);
  return s || "blank-prompt";
}

function finish(cells, result) {
  lastResult = result;
  showImages(cells, result.images.map((im) => im.png_base64), "image/png");
  result.images.forEach((im, i) => {
    const link = document.createElement("a");
    link.textContent = "download";
    link.href = cells[i].img.src;
    link.download = `${slug(result.prompt)}-${im.seed}.png`;
    const seed = document.createElement("span");
    seed.textContent = `seed ${im.seed}`;
    cells[i].caption.replaceChildren(seed, " · ", link);
    cells[i].figure.classList.add("done");
  });
  $("actions").hidden = false;
  $("seed-info").textContent = `seeds ${result.seeds[0]}–${result.seeds[result.seeds.length - 1]}, ` +
    `scale ${result.settings.condition_scale}, top-k ${result.settings.top_k}, ` +
    `${result.timing.total_s.toFixed(1)} s`;
  $("normalized").textContent = JSON.stringify(result.normalized);
  $("text-tokens").textContent = result.text_tokens.join(" ");
  $("notes").textContent = result.notes.length ? result.notes.join("\n") : "none";
  $("tokens").hidden = false;
  setStatus("");
}

function readSettings() {
  const body = { prompt: promptBox.value, n: N_IMAGES };
  for (const [id, parse] of [["seed", parseInt], ["condition_scale", parseFloat], ["top_k", parseInt],
                             ["top_p", parseFloat], ["temperature", parseFloat]]) {
    const raw = $(id).value.trim();
    if (raw !== "") body[id] = parse(raw, 10);
  }
  return body;
}

function errorText(status, body, retryAfter) {
  let detail = body && body.detail;
  if (Array.isArray(detail)) {
    detail = detail.map((d) => {
      const field = String(d.loc[d.loc.length - 1]);
      return d.msg.startsWith(field) ? d.msg : `${field}: ${d.msg}`;
    }).join("; ");
  }
  const again = retryAfter ? ` (try again in ${retryAfter} s)` : "";
  return `${detail || "request failed"}${again} [${status}]`;
}

// Server-sent events over fetch (EventSource cannot POST): split on blank lines, parse event/data fields.
async function* readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trim());
      }
      if (data.length) yield { name, data: JSON.parse(data.join("\n")) };
    }
  }
}

async function run() {
  if (running) running.abort();
  const controller = new AbortController();
  running = controller;
  const cells = makeCells();
  $("actions").hidden = true;
  $("tokens").hidden = true;
  runButton.disabled = true;
  setStatus("Sending…");
  try {
    const response = await fetch("/v1/generate/stream", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(readSettings()),
      signal: controller.signal,
    });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      grid.replaceChildren();
      setStatus(errorText(response.status, body, response.headers.get("Retry-After")), "error");
      return;
    }
    for await (const event of readEvents(response)) {
      const d = event.data;
      if (event.name === "queued") {
        setStatus(d.position > 0
          ? `In queue: ${d.position} request(s) ahead, about ${Math.ceil(d.eta_s)} s`
          : `Starting… about ${Math.ceil(d.eta_s)} s`);
      } else if (event.name === "started") {
        setStatus("Drawing…");
      } else if (event.name === "frame") {
        showImages(cells, d.images, "image/jpeg");
        setStatus(`Drawing… ${Math.round((100 * d.tokens_done) / d.of)} %`);
      } else if (event.name === "result") {
        finish(cells, d);
      } else if (event.name === "error") {
        setStatus(errorText(d.status, d, d.retry_after), "error");
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") setStatus(`Connection lost: ${err.message}`, "error");
  } finally {
    if (running === controller) {
      running = null;
      runButton.disabled = false;
    }
  }
}

// The grid download is composed here, on a canvas, from the images already on the page.
function downloadGrid() {
  if (!lastResult) return;
  const imgs = [...grid.querySelectorAll("img")];
  const side = imgs[0].naturalWidth;
  const columns = Math.ceil(Math.sqrt(imgs.length));
  const canvas = document.createElement("canvas");
  canvas.width = columns * side;
  canvas.height = Math.ceil(imgs.length / columns) * side;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  imgs.forEach((img, i) => ctx.drawImage(img, (i % columns) * side, Math.floor(i / columns) * side));
  canvas.toBlob((blob) => {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `${slug(lastResult.prompt)}-grid-${lastResult.seeds[0]}.png`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }, "image/png");
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  run();
});
$("download-grid").addEventListener("click", downloadGrid);
$("random-seed").addEventListener("click", () => { $("seed").value = ""; });
for (const button of document.querySelectorAll(".example")) {
  button.addEventListener("click", () => {
    promptBox.value = button.dataset.prompt !== undefined ? button.dataset.prompt : button.textContent;
    run();
  });
}
promptBox.focus();
