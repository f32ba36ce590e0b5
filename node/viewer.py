"""The viewer page at `/`: the channel in a `<video>`, what is on, what is coming up, and the schedule.

One HTML document with its own small script, no framework and no third-party
player. The channel runs one slot behind the clock: slot s is made and agreed
during slot s, and plays during slot s + 1. Two `<video>` elements hand over
at each slot boundary: the next slot's MP4 loads in the hidden one as soon as
its certificate is held, and takes the screen when its slot begins. A slot
the network did not commit shows a card instead of a stall. The page polls
`/schedule.json` (the server's clock comes with it, so a viewer's skewed
clock does not shift the programme).
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Interdimensional Cable Network</title>
<style>
  :root { color-scheme: dark; font-family: system-ui, sans-serif; }
  body { margin: 0; background: #111; color: #eee; }
  header, main { max-width: 960px; margin: 0 auto; padding: 0.75rem; }
  h1 { font-size: 1.2rem; margin: 0; }
  #screen { position: relative; aspect-ratio: 1 / 1; max-height: 70vh; margin: 0 auto; background: #000; }
  #screen video { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain; }
  #screen video.off { visibility: hidden; }
  #card { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center;
          text-align: center; padding: 1rem; background: repeating-linear-gradient(90deg,#c00 0 12.5%,#cc0 0 25%,
          #0c0 0 37.5%,#0cc 0 50%,#00c 0 62.5%,#c0c 0 75%,#ccc 0 87.5%,#333 0 100%); color: #000;
          font-weight: bold; font-size: 1.3rem; }
  #card.off { display: none; }
  #now { margin: 0.75rem 0; line-height: 1.4; }
  table { width: 100%; border-collapse: collapse; font-size: 0.85rem; }
  th, td { text-align: left; padding: 0.3rem; border-bottom: 1px solid #333; }
  td.hash { font-family: monospace; word-break: break-all; }
  a { color: #8cf; }
  @media (max-width: 600px) { .wide { display: none; } }
</style>
</head>
<body>
<header><h1>Interdimensional Cable Network</h1></header>
<main>
  <div id="screen">
    <video id="a" muted playsinline preload="auto"></video>
    <video id="b" class="off" muted playsinline preload="auto"></video>
    <div id="card">Tuning in...</div>
  </div>
  <p><button id="sound">Sound on</button></p>
  <div id="now"></div>
  <table>
    <thead><tr><th>slot</th><th>status</th><th class="wide">directors</th><th class="wide">round</th>
      <th class="wide">committed after</th><th class="wide">CLIP agreement</th><th>certificate</th><th>media</th></tr></thead>
    <tbody id="schedule"></tbody>
  </table>
</main>
<script>
"use strict";
const screens = [document.getElementById("a"), document.getElementById("b")];
const card = document.getElementById("card");
const screen = document.getElementById("screen");
let shown = 0, showing = null, loaded = [null, null], skew = 0, info = null;

function slotNow() { return Math.floor((Date.now() / 1000 + skew - info.genesis) / info.slot_sec); }

function load(i, slot) {
  if (loaded[i] === slot) return;
  loaded[i] = slot;
  screens[i].src = "/slots/" + slot + ".mp4";
  screens[i].load();
}

function text(el, value) { el.textContent = value; return el; }

// The lowest cosine of any director's CLIP embeddings to the canonical output's, and how many
// directors announced the very file the certificate names.
function clipSummary(scores, seats) {
  const known = scores.filter(c => c.cosine_b !== null);
  if (!known.length) return scores.length ? "no reference" : "not seen";
  const low = key => Math.min(...known.map(c => c[key])).toFixed(3);
  return "B " + low("cosine_b") + " \u00b7 L " + low("cosine_l") + " \u00b7 " +
    scores.filter(c => c.matched).length + "/" + seats + " same file";
}

function render(data) {
  const rows = document.getElementById("schedule");
  rows.replaceChildren();
  // coming up: slots whose recipe a certificate has fixed already (the latest first, as the table runs)
  for (const s of [...(data.coming_up || [])].reverse()) {
    const tr = document.createElement("tr");
    tr.dataset.slot = s.slot;
    text(tr.insertCell(), s.slot);
    text(tr.insertCell(), "coming up").title = s.recipe.script;
    const directors = text(tr.insertCell(), s.directors.map(d => d.slice(-6)).join(" "));
    directors.className = "wide hash";
    directors.title = s.directors.join(", ");
    text(tr.insertCell(), s.recipe.fallback ? "the fallback programme" : s.recipe.prompt).colSpan = 5;
    rows.append(tr);
  }
  for (const s of data.slots) {
    const tr = document.createElement("tr");
    tr.dataset.slot = s.slot;
    text(tr.insertCell(), s.slot);
    text(tr.insertCell(), s.committed ? "committed" : (s.slot === data.slot ? "in progress" : "no broadcast"));
    const directors = text(tr.insertCell(), s.directors.map(d => d.slice(-6)).join(" "));
    directors.className = "wide hash";
    directors.title = s.directors.join(", ");
    text(tr.insertCell(), s.committed ? s.round : "").className = "wide";
    text(tr.insertCell(), s.committed && s.committed_after_sec !== null ? s.committed_after_sec + " s" : "")
      .className = "wide";
    const clip = text(tr.insertCell(), s.committed ? clipSummary(s.clip, s.directors.length) : "");
    clip.className = "wide clip";
    if (s.committed) clip.title = s.clip.map(c => c.director.slice(-6) + ": B " + c.cosine_b + ", L " + c.cosine_l +
      (c.matched ? ", this file" : ", another file") + (c.self_check ? "" : ", self-check failed")).join("\\n");
    const cert = tr.insertCell();
    cert.className = "hash";
    if (s.committed) {
      const a = document.createElement("a");
      a.href = s.cert; a.textContent = s.certificate; a.className = "certificate";
      cert.append(a);
    }
    const media = tr.insertCell();
    if (s.committed && s.held) {
      const a = document.createElement("a");
      a.href = s.mp4; a.textContent = "MP4"; a.download = "";
      media.append(a);
    }
    rows.append(tr);
  }
}

function tick() {
  if (!info) return;
  const now = slotNow();
  const playing = now - 1;  // slot s plays during slot s + 1
  const offset = Date.now() / 1000 + skew - (info.genesis + now * info.slot_sec);
  const entry = info.bySlot.get(playing);
  const next = info.bySlot.get(playing + 1);
  const other = 1 - shown;
  if (next && next.committed && next.held) load(other, next.slot);
  if (showing !== playing) {
    if (entry && entry.committed && entry.held) {
      let i = loaded[shown] === playing ? shown : (loaded[other] === playing ? other : shown);
      load(i, playing);
      screens[1 - i].pause();
      screens[1 - i].classList.add("off");
      screens[i].classList.remove("off");
      card.classList.add("off");
      shown = i;
      showing = playing;
      screen.dataset.slot = playing;  // which slot is on screen (tests read it)
      if (isFinite(offset) && offset > 0.5) screens[i].currentTime = offset;
      screens[i].play().catch(() => {});
    } else {
      screens[shown].pause();
      card.classList.remove("off");
      card.textContent = playing < 0 ? "The channel starts soon." : "No broadcast in slot " + playing + ".";
      showing = null;
      delete screen.dataset.slot;
    }
  }
  const on = entry ? entry.recipe : null;
  const nowEl = document.getElementById("now");
  nowEl.replaceChildren();
  const line = (label, value) => { const p = document.createElement("div"); p.textContent = label + value;
    nowEl.append(p); };
  line("On now: slot ", playing);
  if (on) { line("Script: ", on.script); line("Picture: ", on.prompt); line("Voice: ", on.voice); }
}

async function poll() {
  try {
    const response = await fetch("/schedule.json", { cache: "no-store" });
    const data = await response.json();
    skew = data.now - Date.now() / 1000;
    info = { genesis: data.genesis_time, slot_sec: data.slot_sec, bySlot: new Map(data.slots.map(s => [s.slot, s])) };
    render(data);
  } catch (err) {
    card.classList.remove("off");
    card.textContent = "The node does not answer; retrying.";
  }
}

document.getElementById("sound").addEventListener("click", (event) => {
  for (const v of screens) v.muted = !v.muted;
  event.target.textContent = screens[0].muted ? "Sound on" : "Sound off";
});
poll();
setInterval(poll, 2000);
setInterval(tick, 250);
</script>
</body>
</html>
"""
