// wxbridge console: the live tail. Everything else is server-rendered.
// No inline script (the Content-Security-Policy forbids it) and no
// innerHTML: every value goes in as text.
"use strict";

(function () {
  const table = document.getElementById("live");
  if (!table) return;
  const rows = document.getElementById("live-rows");
  const state = document.getElementById("live-state");
  const keep = 200;

  function setState(s, text) {
    state.dataset.state = s;
    state.textContent = text;
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    if (text instanceof Node) td.appendChild(text); else td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function badge(status, inDoubt) {
    const span = document.createElement("span");
    const wrap = document.createElement("span");
    span.className = "badge st-" + status.replace(/[^a-z_]/g, "");
    span.textContent = status;
    wrap.appendChild(span);
    if (inDoubt) {
      const d = document.createElement("span");
      d.className = "badge warn";
      d.textContent = "in doubt";
      wrap.append(" ", d);
    }
    return wrap;
  }

  function add(it) {
    if (rows.querySelector('tr[data-key="' + CSS.escape(it.key) + '"]')) return;
    const tr = document.createElement("tr");
    tr.className = "live-item fresh";
    tr.dataset.key = it.key;
    tr.dataset.kind = it.kind;
    tr.dataset.status = it.status;
    cell(tr, it.when);
    cell(tr, it.kind);
    cell(tr, it.kind === "result" ? it.rule : it.source);
    cell(tr, it.user_id ? link("/console/person?q=" + encodeURIComponent(it.user_id), it.user_id) : it.openid);
    const tc = cell(tr, it.template || it.template_id, "template");
    const via = document.createElement("small");
    via.textContent = " (" + (it.channel ? it.channel + " of " : "") + it.app + ")";
    tc.append(via);
    cell(tr, badge(it.status, it.in_doubt));
    if (it.kind === "result") {
      cell(tr, (it.reason || "") + (it.errcode ? " (" + it.errcode + ")" : ""));
    } else {
      cell(tr, it.credits == null ? "" : it.credits === 1 ? "1 credit" : it.credits + " credits");
    }
    if (it.event_id) {
      let href = "/console/event?id=" + encodeURIComponent(it.event_id);
      if (it.event_source) href += "&source=" + encodeURIComponent(it.event_source);
      cell(tr, link(href, it.event_id));
    } else {
      cell(tr, "");
    }
    rows.insertBefore(tr, rows.firstChild);
    while (rows.children.length > keep) rows.removeChild(rows.lastChild);
  }

  const es = new EventSource(table.dataset.src);
  es.onopen = function () { setState("open", "Connected."); };
  es.onerror = function () {
    if (es.readyState === EventSource.CLOSED) {
      setState("closed", "Disconnected: reload the page (you may need to log in again).");
    } else {
      setState("connecting", "Reconnecting…");
    }
  };
  for (const kind of ["result", "ledger"]) {
    es.addEventListener(kind, function (e) { add(JSON.parse(e.data)); });
  }
  es.addEventListener("dropped", function () { setState("dropped", "This tail fell behind and was dropped; reconnecting…"); });
  es.addEventListener("end", function () { setState("connecting", "Session check; reconnecting…"); });
})();
