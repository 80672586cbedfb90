// gptzoo playground: the public API only (/v1/models, /v1/completions with stream), no build step, no network
// beyond this server. The settings live in the URL so a view can be linked; run=1 starts it on load.
"use strict";
const FIELDS = ["models", "prompt", "max_tokens", "temperature", "seed", "max_tpot_ms"];
const $ = (id) => document.getElementById(id);
const cards = new Map();  // id and aliases -> model card (for val_loss)
let controllers = [];

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = sessionStorage.getItem("gptzoo-api-key");
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function apiError(resp) {  // the API's own words: {"error": {"message": ...}}
  try { const body = await resp.json(); return `${resp.status}: ${body.error.message}`; }
  catch { return `${resp.status} ${resp.statusText}`; }
}

async function loadModels() {
  const resp = await fetch("/v1/models", { headers: headers() });
  if (resp.status === 401) { $("key-row").hidden = false; throw new Error(await apiError(resp)); }
  if (!resp.ok) throw new Error(await apiError(resp));
  const list = $("model-ids");
  list.replaceChildren();
  cards.clear();
  for (const card of (await resp.json()).data) {
    for (const name of [card.id, ...(card.aliases || [])]) cards.set(name, card);
    const opt = document.createElement("option");
    opt.value = card.id;
    list.append(opt);
  }
}

function fromUrl() {
  const q = new URLSearchParams(location.search);
  for (const f of FIELDS) if (q.has(f)) $(f).value = q.get(f);
  return q.get("run") === "1";
}

function toUrl() {
  const q = new URLSearchParams();
  for (const f of FIELDS) if ($(f).value !== "") q.set(f, $(f).value);
  history.replaceState(null, "", "?" + q.toString());
}

function num(id) { const v = $(id).value; return v === "" ? null : Number(v); }

function drawChart(el, points) {  // points: [ms since start, tokens]
  const tMax = Math.max(1, ...points.map((p) => p[0])), nMax = Math.max(1, ...points.map((p) => p[1]));
  el.querySelector("polyline").setAttribute("points",
    points.map(([t, n]) => `${(200 * t / tMax).toFixed(1)},${(60 - 58 * n / nMax).toFixed(1)}`).join(" "));
}

async function runOne(model, el) {
  const ctl = new AbortController();
  controllers.push(ctl);
  const body = { model, prompt: $("prompt").value, max_tokens: num("max_tokens"), temperature: num("temperature"),
                 stream: true, stream_options: { include_usage: true } };
  if (num("seed") !== null) body.seed = num("seed");
  if (num("max_tpot_ms") !== null) body.max_tpot_ms = num("max_tpot_ms");
  const set = (cls, v) => { el.querySelector("." + cls).textContent = v; };
  const fail = (msg) => { const e = el.querySelector(".error"); e.hidden = false; e.textContent = msg; };
  const start = performance.now();
  let first = null, text = "", points = [[0, 0]], tokens = 0;
  try {
    const resp = await fetch("/v1/completions", { method: "POST", headers: headers(), body: JSON.stringify(body),
                                                   signal: ctl.signal });
    if (!resp.ok) { fail(await apiError(resp)); return; }
    const served = resp.headers.get("x-gptzoo-model");
    set("served-by", served || "?");
    set("route", resp.headers.get("x-gptzoo-route") || "?");
    const card = cards.get(served);
    set("loss", card && card.val_loss != null ? card.val_loss.toFixed(4) : "n/a");
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf = (buf + value).replace(/\r\n/g, "\n");  // SSE lines may end in CRLF (gptzoo's do)
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {  // one SSE event
        const data = buf.slice(0, cut).split("\n").filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).trimStart()).join("\n");
        buf = buf.slice(cut + 2);
        if (!data || data === "[DONE]") continue;
        const msg = JSON.parse(data);
        if (msg.error) { fail(msg.error.message); continue; }
        const now = performance.now() - start;
        for (const c of msg.choices || []) {
          if (!c.text) continue;
          if (first === null) { first = now; set("ttft", `${first.toFixed(0)} ms`); }
          text += c.text;
          tokens += [...c.text].length;  // live estimate; the usage chunk gives the exact count at the end
        }
        if (msg.usage) tokens = msg.usage.completion_tokens;
        points.push([now, tokens]);
        el.querySelector(".text").textContent = text;
        if (first !== null && now > first) set("tps", (Math.max(tokens - 1, 0) * 1000 / (now - first)).toFixed(1));
        drawChart(el.querySelector(".chart"), points);
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") fail(String(e.message || e));
  } finally {
    el.dataset.done = "1";
  }
}

async function run(event) {
  if (event) event.preventDefault();
  const key = $("api_key").value;
  if (key) sessionStorage.setItem("gptzoo-api-key", key);
  toUrl();
  document.body.dataset.state = "running";
  $("status").textContent = "";
  if (cards.size === 0) {
    try { await loadModels(); } catch (e) { $("status").textContent = e.message; document.body.dataset.state = "done"; return; }
  }
  const models = $("models").value.split(",").map((m) => m.trim()).filter(Boolean).slice(0, 2);
  const answers = $("answers");
  answers.replaceChildren();
  controllers = [];
  $("run").disabled = true; $("stop").disabled = false;
  const jobs = models.map((m) => {
    const el = $("answer-tpl").content.firstElementChild.cloneNode(true);
    el.querySelector(".asked").textContent = m;
    el.dataset.model = m;
    answers.append(el);
    return runOne(m, el);
  });
  await Promise.all(jobs);
  $("run").disabled = false; $("stop").disabled = true;
  document.body.dataset.state = "done";
}

document.addEventListener("DOMContentLoaded", async () => {
  $("settings").addEventListener("submit", run);
  $("stop").addEventListener("click", () => controllers.forEach((c) => c.abort()));
  const autorun = fromUrl();
  try { await loadModels(); } catch (e) { $("status").textContent = e.message; }
  if (autorun && cards.size > 0) run();  // with a key to ask for, the user starts it after typing the key
  else document.body.dataset.state = "idle";
});
