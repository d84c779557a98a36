// stfcat site: timeline and paper-table filters, sortable tables. Plain JS, no dependencies.
(function () {
  "use strict";

  function num(text) {
    var t = text.replace(/[,\s]/g, "");
    if (t === "" || t === "—" || t === "-") return null;
    var v = parseFloat(t);
    return isNaN(v) || !/^[-+]?[\d.]+(e[-+]?\d+)?$/i.test(t) ? null : v;
  }

  function makeSortable(table) {
    var heads = table.querySelectorAll("thead th");
    heads.forEach(function (th, col) {
      th.classList.add("stfcat-sort");
      th.setAttribute("role", "button");
      th.setAttribute("tabindex", "0");
      var sort = function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[col] ? a.cells[col].textContent.trim() : "";
          var y = b.cells[col] ? b.cells[col].textContent.trim() : "";
          var nx = num(x), ny = num(y);
          if (nx === null && ny === null) return asc ? x.localeCompare(y) : y.localeCompare(x);
          if (nx === null) return 1;   // missing values last either way
          if (ny === null) return -1;
          return asc ? nx - ny : ny - nx;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      };
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") sort(); });
    });
  }

  function timeline() {
    var root = document.getElementById("stl");
    if (!root) return;
    var boxes = document.querySelectorAll("#stl-filters input[name=cat]");
    var from = document.getElementById("stl-from");
    var to = document.getElementById("stl-to");
    var count = document.getElementById("stl-count");
    var items = root.querySelectorAll(".stl-item");
    function update() {
      var on = {};
      boxes.forEach(function (b) { on[b.value] = b.checked; });
      var lo = parseInt(from.value, 10), hi = parseInt(to.value, 10);
      var shown = 0;
      items.forEach(function (it) {
        var y = parseInt(it.getAttribute("data-year"), 10);
        var ok = on[it.getAttribute("data-cat")] !== false &&
          (isNaN(lo) || y >= lo) && (isNaN(hi) || y <= hi);
        it.hidden = !ok;
        if (ok) shown += 1;
      });
      root.querySelectorAll(".stl-year").forEach(function (s) {
        s.hidden = !s.querySelector(".stl-item:not([hidden])");
      });
      count.textContent = shown + " of " + items.length + " papers shown";
    }
    boxes.forEach(function (b) { b.addEventListener("change", update); });
    [from, to].forEach(function (i) { i.addEventListener("input", update); });
    update();
  }

  function paperTable() {
    var table = document.getElementById("pt");
    if (!table) return;
    var cat = document.getElementById("pt-cat"), year = document.getElementById("pt-year");
    var task = document.getElementById("pt-task"), code = document.getElementById("pt-code");
    var run = document.getElementById("pt-run"), count = document.getElementById("pt-count");
    function update() {
      var shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
        var ok = (!cat.value || r.getAttribute("data-cat") === cat.value) &&
          (!year.value || r.getAttribute("data-year") === year.value) &&
          (!task.value || r.getAttribute("data-task") === task.value) &&
          (!code.checked || r.getAttribute("data-code") === "1") &&
          (!run.checked || r.getAttribute("data-run") === "1");
        r.hidden = !ok;
        if (ok) shown += 1;
      });
      count.textContent = shown + " shown";
    }
    [cat, year, task].forEach(function (s) { s.addEventListener("change", update); });
    [code, run].forEach(function (c) { c.addEventListener("change", update); });
    update();
  }

  function init() {
    document.querySelectorAll(".stfcat-sortable table").forEach(makeSortable);
    timeline();
    paperTable();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
