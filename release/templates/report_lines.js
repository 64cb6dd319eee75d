// The per-line view of report.html: plain JS, no libraries. The lines are embedded as JSON
// (<script type="application/json" id="line-data">) and rendered one page at a time, so a
// dataset of 10,000 lines costs one page of DOM rows, not 10,000.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("line-data").textContent);
  var PAGE = DATA.page_size || 100;
  var FAILED = 1, DISAGREE = 2;
  var state = { ds: 0, page: 0, failed: false, disagree: false, q: "", metric: null, variant: null };
  var searchText = DATA.datasets.map(function () { return []; });
  var root = document.getElementById("lines");
  if (!root || !DATA.datasets.length) { return; }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function show(value) {
    if (value === null || value === undefined) { return ""; }
    if (typeof value === "object") {
      return Object.keys(value).map(function (k) {
        var v = value[k];
        return k + ": " + (typeof v === "object" && v !== null ? JSON.stringify(v) : String(v));
      }).join("\n");
    }
    return String(value);
  }
  function textOf(ds, i) {
    var cache = searchText[ds];
    if (cache[i] === undefined) { cache[i] = JSON.stringify(DATA.datasets[ds].rows[i]).toLowerCase(); }
    return cache[i];
  }
  function score(row, v, metric) {
    var s = row[4][v];
    if (!s || !(metric in s)) { return Infinity; }
    var x = s[metric];
    if (typeof x === "number") { return x; }
    if (typeof x === "boolean") { return x ? 1 : 0; }
    var w = String(x).toLowerCase();
    return DATA.positive.indexOf(w) >= 0 ? 1 : DATA.negative.indexOf(w) >= 0 ? 0 : Infinity;
  }
  function selected() {
    var d = DATA.datasets[state.ds];
    var q = state.q.toLowerCase();
    var out = [];
    for (var i = 0; i < d.rows.length; i++) {
      var flags = d.rows[i][5];
      if (state.failed && !(flags & FAILED)) { continue; }
      if (state.disagree && !(flags & DISAGREE)) { continue; }
      if (q && textOf(state.ds, i).indexOf(q) < 0) { continue; }
      out.push(i);
    }
    if (state.metric !== null) {  // from a summary link: that metric's worst lines first
      var v = Math.max(0, d.variant_ids.indexOf(state.variant));
      out.sort(function (a, b) { return score(d.rows[a], v, state.metric) - score(d.rows[b], v, state.metric) || a - b; });
    }
    return out;
  }
  function render() {
    var d = DATA.datasets[state.ds];
    Array.prototype.forEach.call(document.querySelectorAll("#lines .tabs button"), function (b, i) {
      b.className = i === state.ds ? "on" : "";
    });
    var rows = selected();
    var pages = Math.max(1, Math.ceil(rows.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    var first = state.page * PAGE;
    var shown = rows.slice(first, first + PAGE);
    document.getElementById("lines-status").textContent =
      (rows.length ? "lines " + (first + 1) + "\u2013" + (first + shown.length) : "no lines") +
      " of " + rows.length + (rows.length !== d.rows.length ? " (filtered from " + d.rows.length + ")" : "") +
      ", page " + (state.page + 1) + " of " + pages +
      (state.metric !== null ? "; sorted by " + state.metric + " of " + (d.variants[Math.max(0, d.variant_ids.indexOf(state.variant))]) + ", lowest first" : "");
    var table = document.getElementById("lines-table");
    table.textContent = "";
    var head = el("tr");
    head.appendChild(el("th", {}, "line"));
    head.appendChild(el("th", {}, "inputs"));
    d.variants.forEach(function (key, v) {
      head.appendChild(el("th", { title: d.variant_ids[v] }, key + " output"));
      head.appendChild(el("th", { title: d.variant_ids[v] }, key + " scores"));
    });
    var thead = el("thead");
    thead.appendChild(head);
    table.appendChild(thead);
    var body = el("tbody");
    shown.forEach(function (i) {
      var row = d.rows[i];
      var tr = el("tr", { "class": "line" + (row[5] & FAILED ? " fail" : "") + (row[5] & DISAGREE ? " disagree" : ""), "data-line": row[0] });
      tr.appendChild(el("td", {}, row[0]));
      tr.appendChild(el("td", { "class": "pre" }, show(row[1])));
      d.variants.forEach(function (key, v) {
        var err = row[3][v];
        var out = el("td", { "class": "pre" + (err ? " error" : "") }, err ? "error: " + err : show(row[2][v]));
        tr.appendChild(out);
        var scores = row[4][v] || {};
        var cell = el("td", { "class": "pre" });
        Object.keys(scores).forEach(function (k) {
          var span = el("span", { "class": k === state.metric ? "hl" : "" }, k + ": " + show(scores[k]));
          cell.appendChild(span);
          cell.appendChild(document.createTextNode("\n"));
        });
        tr.appendChild(cell);
      });
      body.appendChild(tr);
    });
    table.appendChild(body);
    document.getElementById("lines-prev").disabled = state.page === 0;
    document.getElementById("lines-next").disabled = state.page >= pages - 1;
  }
  function build() {
    var tabs = el("div", { "class": "tabs" });
    DATA.datasets.forEach(function (d, i) {
      var b = el("button", { type: "button" }, d.name + " (" + d.rows.length + ")");
      b.addEventListener("click", function () { state.ds = i; state.page = 0; state.metric = null; render(); });
      tabs.appendChild(b);
    });
    var bar = el("div", { "class": "bar" });
    function check(label, key) {
      var box = el("input", { type: "checkbox", id: "lines-" + key });
      box.addEventListener("change", function () { state[key] = box.checked; state.page = 0; render(); });
      var lab = el("label", { "for": "lines-" + key });
      lab.appendChild(box);
      lab.appendChild(document.createTextNode(" " + label));
      bar.appendChild(lab);
    }
    check("failed only", "failed");
    check("disagreements only", "disagree");
    var search = el("input", { type: "search", id: "lines-search", placeholder: "search inputs, outputs, scores" });
    var timer = null;
    search.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { state.q = search.value; state.page = 0; render(); }, 150);
    });
    bar.appendChild(search);
    var prev = el("button", { type: "button", id: "lines-prev" }, "\u2190 previous");
    var next = el("button", { type: "button", id: "lines-next" }, "next \u2192");
    prev.addEventListener("click", function () { state.page -= 1; render(); });
    next.addEventListener("click", function () { state.page += 1; render(); });
    bar.appendChild(prev);
    bar.appendChild(next);
    bar.appendChild(el("span", { id: "lines-status" }));
    root.appendChild(tabs);
    root.appendChild(bar);
    root.appendChild(el("table", { id: "lines-table", "class": "lines" }));
  }
  // Deep links: #lines?ds=<dataset>&failed=1&disagree=1&q=<text>&metric=<metric>&variant=<variant id>
  // (the summary's metric links use them; so can bookmarks and tests).
  function applyHash(scroll) {
    var hash = window.location.hash;
    if (hash.indexOf("#lines?") !== 0) { return; }
    var params = {};
    hash.slice(7).split("&").forEach(function (pair) {
      var eq = pair.indexOf("=");
      if (eq > 0) { params[decodeURIComponent(pair.slice(0, eq))] = decodeURIComponent(pair.slice(eq + 1)); }
    });
    var names = DATA.datasets.map(function (d) { return d.name; });
    state.ds = Math.max(0, names.indexOf(params.ds));
    state.failed = params.failed === "1";
    state.disagree = params.disagree === "1";
    state.q = params.q || "";
    state.metric = params.metric || null;
    state.variant = params.variant || null;
    state.page = Math.max(0, (parseInt(params.page, 10) || 1) - 1);
    document.getElementById("lines-failed").checked = state.failed;
    document.getElementById("lines-disagree").checked = state.disagree;
    document.getElementById("lines-search").value = state.q;
    render();
    if (scroll) { root.scrollIntoView(); }
  }
  build();
  render();
  applyHash(false);
  window.addEventListener("hashchange", function () { applyHash(true); });
})();
