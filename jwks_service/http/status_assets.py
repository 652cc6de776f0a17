"""The status page's style sheet and script (http/status_page.py), inline in the page and allowed by
their SHA-256 in its Content-Security-Policy: the page loads nothing from anywhere else.

The script only enhances a page that is complete without it: it keeps the relative times current
and, on each key event from `/keys/events` (EventSource), fetches the page again and swaps in its
keysets, so a rotation shows without a reload. It writes text with `textContent` only.
"""

from __future__ import annotations

import base64
import hashlib

CSS = """
:root{--bg:#f4f6fb;--card:#fff;--ink:#0f172a;--muted:#64748b;--line:#e2e8f0;--grid:#eef2f7;
--next:#2563eb;--current:#059669;--previous:#64748b;--tainted:#d97706;--revoked:#dc2626;--retired:#a3acb9;
--rot:#7c3aed;--now:#0f172a;--shadow:0 1px 2px rgba(15,23,42,.06),0 8px 24px rgba(15,23,42,.06)}
@media (prefers-color-scheme:dark){:root{--bg:#0b1120;--card:#111a2e;--ink:#e2e8f0;--muted:#94a3b8;
--line:#1e293b;--grid:#18223a;--previous:#94a3b8;--retired:#5b6577;--now:#e2e8f0;--rot:#a78bfa;
--shadow:0 1px 2px rgba(0,0,0,.4)}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;font-size:.86em}
header.top{max-width:1180px;margin:0 auto;padding:28px 24px 8px;display:flex;flex-wrap:wrap;gap:12px;
align-items:baseline;justify-content:space-between}
header.top h1{margin:0;font-size:22px;letter-spacing:-.01em}
header.top h1 span{color:var(--muted);font-weight:500}
.meta{color:var(--muted);font-size:13px}
.pill{display:inline-flex;align-items:center;gap:6px;padding:3px 10px;border-radius:999px;font-size:12px;
font-weight:600;background:var(--card);border:1px solid var(--line);color:var(--muted)}
.pill::before{content:"";width:8px;height:8px;border-radius:50%;background:var(--retired)}
.pill.on{color:var(--current)}.pill.on::before{background:var(--current);box-shadow:0 0 0 3px rgba(5,150,105,.18)}
.pill.off{color:var(--tainted)}.pill.off::before{background:var(--tainted)}
main{max-width:1180px;margin:0 auto;padding:8px 24px 40px}
#feed{list-style:none;margin:0 0 12px;padding:0;display:flex;flex-direction:column;gap:6px}
#feed li{background:var(--card);border:1px solid var(--line);border-left:4px solid var(--rot);border-radius:10px;
padding:6px 12px;font-size:13px;box-shadow:var(--shadow)}
section.keyset{background:var(--card);border:1px solid var(--line);border-radius:16px;box-shadow:var(--shadow);
margin:18px 0;padding:20px 22px}
.ks-head{display:flex;flex-wrap:wrap;gap:10px 18px;align-items:center;margin-bottom:6px}
.ks-head h2{margin:0;font-size:19px}
.chip{font-size:12px;padding:2px 8px;border-radius:6px;background:var(--grid);color:var(--muted);font-weight:600}
.ks-facts{display:flex;flex-wrap:wrap;gap:6px 26px;margin:8px 0 14px;font-size:14px}
.ks-facts div b{display:block;font-size:11px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);
font-weight:600}
.waiting-note{color:var(--tainted);font-weight:600}
figure.timeline{margin:0 0 10px}
svg.tl{width:100%;height:auto;display:block}
svg.tl text{font-size:12px;fill:var(--muted)}
svg.tl text.kid{fill:var(--ink);font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11.5px}
svg.tl .gridline{stroke:var(--grid);stroke-width:1}
svg.tl .band{fill:var(--grid);opacity:.45}
svg.tl .seg{rx:5px}
svg.tl .seg.waiting{fill:var(--next);opacity:.45}
svg.tl .seg.signing{fill:var(--current)}
svg.tl .seg.verifying{fill:var(--previous);opacity:.7}
svg.tl .row.tainted .seg.verifying,svg.tl .row.tainted .seg.signing{fill:var(--tainted)}
svg.tl .row.revoked .seg{fill:var(--revoked);opacity:.55}
svg.tl .row.retired .seg{fill:var(--retired);opacity:.6}
svg.tl .seg.planned{opacity:.28}
svg.tl .mark-revoked{stroke:var(--revoked);stroke-width:3}
svg.tl .mark-tainted{fill:var(--tainted)}
svg.tl .now{stroke:var(--now);stroke-width:2}
svg.tl text.now-label{fill:var(--now);font-weight:700}
svg.tl .rot{stroke:var(--rot);stroke-width:2;stroke-dasharray:5 4}
svg.tl .rot.later{opacity:.45}
svg.tl text.rot-label{fill:var(--rot);font-weight:700}
figcaption{display:flex;flex-wrap:wrap;gap:4px 16px;font-size:12px;color:var(--muted);margin-top:4px}
figcaption i{display:inline-block;width:18px;height:8px;border-radius:3px;margin-right:5px;vertical-align:middle}
i.k-waiting{background:var(--next);opacity:.45}i.k-signing{background:var(--current)}
i.k-verifying{background:var(--previous);opacity:.7}i.k-tainted{background:var(--tainted)}
i.k-planned{background:var(--current);opacity:.28}i.k-rot{border-top:2px dashed var(--rot);height:0;border-radius:0}
.scroll{overflow-x:auto}
table.keys{width:100%;border-collapse:collapse;font-size:13px;margin-top:6px}
table.keys th{text-align:left;font-size:11px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);
font-weight:600;padding:6px 10px;border-bottom:1px solid var(--line);white-space:nowrap}
table.keys td{padding:8px 10px;border-bottom:1px solid var(--line);vertical-align:top}
table.keys tr:last-child td{border-bottom:0}
td.kid code{display:inline-block;width:22.5ch;word-break:break-all}
.badge{display:inline-block;padding:2px 9px;border-radius:999px;font-size:12px;font-weight:700;color:#fff;
white-space:nowrap}
.badge.next{background:var(--next)}.badge.current{background:var(--current)}.badge.previous{background:var(--previous)}
.badge.tainted{background:var(--tainted)}.badge.revoked{background:var(--revoked)}.badge.retired{background:var(--retired)}
.when{white-space:nowrap}
.when time{display:block}.when .rel{color:var(--muted);font-size:12px}
.when.planned time{font-style:italic}
.share{white-space:nowrap}
.share svg{vertical-align:middle;margin-right:6px}
.share .track{fill:var(--grid)}.share .fill{fill:var(--current)}
.muted{color:var(--muted)}
a{color:var(--next)}
@media (prefers-color-scheme:dark){a{color:#60a5fa}}
h3{font-size:13px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);margin:16px 0 6px}
ol.events{list-style:none;margin:0;padding:0;display:grid;gap:4px}
ol.events li{display:flex;gap:10px;align-items:baseline;font-size:13.5px}
ol.events .rel{color:var(--muted);font-size:12px;min-width:92px}
.ev{font-size:11px;font-weight:700;text-transform:uppercase;letter-spacing:.05em;padding:1px 7px;border-radius:5px;
background:var(--grid)}
.ev.rotated{color:var(--current)}.ev.created{color:var(--next)}.ev.tainted{color:var(--tainted)}
.ev.revoked{color:var(--revoked)}.ev.retired{color:var(--muted)}
footer{max-width:1180px;margin:0 auto;padding:0 24px 32px;color:var(--muted);font-size:12px}
"""

JS = """
(() => {
  "use strict";
  const live = document.getElementById("live");
  const units = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
  function relative(at, now) {
    const seconds = Math.round(at - now);
    if (seconds === 0) return "now";
    const s = Math.abs(seconds);
    let text = s + "s";
    for (let i = 0; i < units.length - 1; i++) {
      const [unit, size] = units[i], [small, smallSize] = units[i + 1];
      if (s >= size) {
        const rest = Math.floor((s % size) / smallSize);
        text = Math.floor(s / size) + unit + (rest ? " " + rest + small : "");
        break;
      }
    }
    return seconds > 0 ? "in " + text : text + " ago";
  }
  function tick() {
    const now = Date.now() / 1000;
    for (const el of document.querySelectorAll("[data-at]")) {
      el.textContent = ("due" in el.dataset ? "due " : "") + relative(+el.dataset.at, now);
    }
  }
  let timer = null, busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(location.href, { cache: "no-store", headers: { Accept: "text/html" } });
      if (response.ok) {
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        for (const id of ["keysets", "generated"]) {
          const fresh = page.getElementById(id), old = document.getElementById(id);
          if (fresh && old) old.replaceWith(fresh);
        }
        tick();
      }
    } catch (e) {
      /* keep what is shown; the next event or the minute's refresh tries again */
    } finally {
      busy = false;
      if (again) { again = false; schedule(); }
    }
  }
  function schedule() { clearTimeout(timer); timer = setTimeout(refresh, 200); }
  const feed = document.getElementById("feed");
  function announce(event) {
    let data;
    try { data = JSON.parse(event.data); } catch (e) { return; }
    const item = document.createElement("li");
    const what = { rotated: "now signs", created: "published", tainted: "marked suspect",
                   revoked: "revoked", retired: "retired" }[data.type] || data.type;
    item.textContent = new Date(data.at).toISOString().replace(".000", "").replace("T", " ") + " \\u2014 " +
      data.keyset + ": " + data.kid + " " + what;
    feed.prepend(item);
    while (feed.children.length > 5) feed.lastElementChild.remove();
  }
  if (live && "EventSource" in window) {
    const source = new EventSource(live.dataset.events);
    let connected = false;
    source.addEventListener("open", () => { live.className = "pill on"; live.textContent = "live"; });
    source.addEventListener("error", () => { live.className = "pill off"; live.textContent = "reconnecting"; });
    for (const type of ["created", "rotated", "tainted", "revoked", "retired"]) {
      source.addEventListener(type, (event) => { announce(event); schedule(); });
    }
    source.addEventListener("ready", () => { if (connected) schedule(); connected = true; });
  }
  tick();
  setInterval(tick, 15000);
  setInterval(schedule, 60000);
})();
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only what the page needs: its own style sheet and script (by hash), the event stream and its own
# URL (fetch, EventSource), an empty favicon; no frames, forms, plugins or base URL changes.
CSP = (
    f"default-src 'none'; style-src {_sha256(CSS)}; script-src {_sha256(JS)}; connect-src 'self'; "
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
