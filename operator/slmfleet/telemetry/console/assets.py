"""The console's stylesheet and its small keyboard layer, served from
``/review/static/`` (kept in Python so every install has them)."""

from __future__ import annotations

CSS = """
:root { --fg: #1d2330; --muted: #5b6474; --line: #d8dde6; --accent: #1f5fbf;
        --warn: #b3261e; --ok: #1e7a3a; --bg: #fbfcfd; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 1rem; align-items: center; padding: .6rem 1.2rem;
         border-bottom: 1px solid var(--line); background: #fff; }
header .brand { font-weight: 700; color: var(--fg); text-decoration: none; }
header nav { flex: 1; }
header .who { color: var(--muted); }
main { padding: 1rem 1.2rem; max-width: 1200px; }
footer { padding: .6rem 1.2rem; color: var(--muted); font-size: 13px;
         border-top: 1px solid var(--line); }
h1 { font-size: 1.4rem; margin: .2rem 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.4rem 0 .5rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1.2rem; background: #fff; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line);
         vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.excerpt { color: var(--muted); max-width: 28rem; overflow-wrap: anywhere; }
tr.breached td:first-child { border-left: 3px solid var(--warn); }
tr[data-row]:focus-within { background: #eef4ff; }
.warn { color: var(--warn); font-weight: 600; }
.empty { color: var(--muted); }
.flash { padding: .5rem .8rem; background: #e8f5ec; border: 1px solid #b7dfc3; color: var(--ok); }
.error { padding: .5rem .8rem; background: #fdecea; border: 1px solid #f2b8b5; color: var(--warn); }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: .3rem 0; font: 14px/1.4 ui-monospace,
      monospace; background: #fff; border: 1px solid var(--line); padding: .5rem .6rem; }
.msg .role, .answer .meta { font-size: 13px; color: var(--muted); }
.msg.user pre { border-left: 3px solid var(--accent); }
form.filters, form.escalate { display: flex; gap: .5rem; align-items: center; flex-wrap: wrap; }
form.resolve { display: grid; gap: .3rem; max-width: 48rem; }
form.inline { display: inline; }
form.login { display: grid; gap: .4rem; max-width: 22rem; }
textarea, input, select { font: inherit; padding: .35rem .45rem; border: 1px solid var(--line);
                          border-radius: 4px; background: #fff; }
button { font: inherit; padding: .35rem .9rem; border: 1px solid var(--accent); border-radius: 4px;
         background: var(--accent); color: #fff; cursor: pointer; }
header button { background: #fff; color: var(--accent); }
:focus-visible { outline: 3px solid #8ab4f8; outline-offset: 1px; }
kbd { border: 1px solid var(--line); border-radius: 3px; padding: 0 .25rem; background: #fff; }
"""

JS = """
(function () {
  'use strict';
  function rows() { return Array.prototype.slice.call(document.querySelectorAll('[data-row] a')); }
  function click(id) {
    var el = document.getElementById(id); if (el) { el.click(); return true; } return false;
  }
  function focus(id) {
    var el = document.getElementById(id); if (el) { el.focus(); return true; } return false;
  }
  document.addEventListener('keydown', function (e) {
    var t = e.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT')) {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && t.form) {
        e.preventDefault();
        if (t.form.requestSubmit) { t.form.requestSubmit(); } else { t.form.submit(); }
      } else if (e.key === 'Escape') { t.blur(); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    var links = rows();
    var at = links.indexOf(document.activeElement);
    var handled = true;
    switch (e.key) {
      case 'j': if (links.length) { links[Math.min(links.length - 1, at + 1)].focus(); } break;
      case 'k': if (links.length) { links[Math.max(0, at - 1)].focus(); } break;
      case 'c': handled = click('claim'); break;
      case 'u': handled = click('release'); break;
      case 'a': handled = focus('answer'); break;
      case 'l': handled = focus('label'); break;
      case 'e': handled = focus('escalate-queue'); break;
      case '/': handled = focus('filter-queue'); break;
      case 'g': window.location.href = '/review/queue'; break;
      default: handled = false;
    }
    if (handled) { e.preventDefault(); }
  });
  var first = rows()[0];
  if (first && !document.querySelector('[autofocus]')) { first.focus(); }
})();
"""
