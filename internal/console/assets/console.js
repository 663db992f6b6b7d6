// The console's only script. The pages work without it (the server renders
// them and every action is a form); it keeps them live: the fleet table
// listens to /live (server-sent events) for the rows of the page on show
// that changed and applies the filter as it is typed; the truck, model and
// alerts pages listen to their own stream (/live/...) for the parts of the
// page, rendered by the server, that changed. It counts "how long ago"
// every second.
"use strict";
(function () {
  var fields = ["id", "online", "model", "groups", "version", "desired", "phase", "progress", "alerts", "last_seen", "error"];

  function ago(iso) {
    if (!iso) return "never";
    var s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (s < 60) return s + "s ago";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s ago";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m ago";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h ago";
  }

  function tickAges() {
    document.querySelectorAll("[data-seen]").forEach(function (el) {
      el.textContent = ago(el.getAttribute("data-seen"));
    });
  }

  function cell(tr, f, row) {
    var td = tr.querySelector('td[data-f="' + f + '"]');
    switch (f) {
      case "id":
        var a = td.querySelector("a") || td.appendChild(document.createElement("a"));
        a.href = "/trucks/" + encodeURIComponent(row.id);
        a.textContent = row.id;
        return;
      case "online": td.textContent = row.online ? "online" : "offline"; return;
      case "version": td.textContent = "v" + row.version; return;
      case "desired": td.textContent = "v" + row.desired; return;
      case "last_seen": td.setAttribute("data-seen", row.last_seen); td.textContent = ago(row.last_seen); return;
      default: td.textContent = row[f] || "";
    }
  }

  function newRow(id) {
    var tr = document.createElement("tr");
    tr.id = "truck-" + id;
    tr.setAttribute("data-id", id);
    var labels = document.querySelectorAll("#fleet thead th");
    fields.forEach(function (f, i) {
      var td = document.createElement("td");
      td.setAttribute("data-f", f);
      td.setAttribute("data-label", labels[i] ? labels[i].textContent : f);
      tr.appendChild(td);
    });
    return tr;
  }

  function apply(msg) {
    var tbody = document.querySelector("#fleet tbody");
    var have = {};
    tbody.querySelectorAll("tr[data-id]").forEach(function (tr) { have[tr.getAttribute("data-id")] = tr; });
    var keep = {};
    msg.order.forEach(function (id) {
      var tr = have[id] || newRow(id);
      var row = msg.rows[id];
      if (row) {
        fields.forEach(function (f) { cell(tr, f, row); });
        tr.classList.toggle("offline", !row.online);
        if (have[id]) {
          tr.classList.add("flash");
          setTimeout(function () { tr.classList.remove("flash"); }, 800);
        }
      }
      keep[id] = true;
      tbody.appendChild(tr); // moves it into the server's order
    });
    Object.keys(have).forEach(function (id) { if (!keep[id]) have[id].remove(); });
    document.getElementById("total").textContent = msg.total;
    document.getElementById("all").textContent = msg.all;
    document.getElementById("page").textContent = msg.page;
    document.getElementById("pages").textContent = msg.pages;
    pager("prev", msg.page > 1 ? msg.page - 1 : 0);
    pager("next", msg.page < msg.pages ? msg.page + 1 : 0);
    releases(msg.releases || []);
    var stale = document.getElementById("stale");
    stale.hidden = !msg.stale;
    if (msg.stale) document.getElementById("stale-since").textContent = msg.stale;
  }

  function pager(id, page) {
    var a = document.getElementById(id);
    a.hidden = !page;
    if (page) {
      var p = new URLSearchParams(location.search);
      p.set("page", page);
      a.href = "?" + p.toString();
    }
  }

  function releases(rs) {
    var box = document.getElementById("releases");
    box.textContent = "";
    if (!rs.length) {
      var none = document.createElement("div");
      none.className = "muted";
      none.textContent = "No release announced yet.";
      box.appendChild(none);
    }
    rs.forEach(function (r) {
      var d = document.createElement("div");
      d.className = "release";
      var a = document.createElement("a");
      a.href = "/models/" + encodeURIComponent(r.model);
      a.textContent = r.model;
      d.appendChild(a);
      var text = ": stable v" + r.stable;
      if (r.canary) {
        text += ", canary v" + r.canary + " for";
        if (r.groups && r.groups.length) text += " groups " + r.groups.join(", ");
        if (r.percent) text += " " + r.percent + "% of the other trucks";
      }
      d.appendChild(document.createTextNode(text + " (serial " + r.serial + ")"));
      box.appendChild(d);
    });
  }

  var source = null;
  function connect() {
    if (source) source.close();
    var live = document.getElementById("live");
    source = new EventSource("/live" + location.search);
    source.addEventListener("page", function (ev) {
      apply(JSON.parse(ev.data));
      live.textContent = "live";
    });
    source.onerror = function () { live.textContent = "reconnecting…"; };
  }

  function filterChanged(form) {
    var p = new URLSearchParams();
    new FormData(form).forEach(function (v, k) { if (v !== "") p.set(k, v); });
    var qs = p.toString();
    history.replaceState(null, "", qs ? "?" + qs : location.pathname);
    connect();
  }

  // followParts puts each part the page's stream sends in place: an
  // element id and its HTML, rendered and escaped by the server's
  // templates like the page itself. The browser reconnects the stream by
  // itself, and the first message after a reconnect has every part.
  function followParts(src) {
    var source = new EventSource(src);
    source.addEventListener("parts", function (ev) {
      var parts = JSON.parse(ev.data);
      Object.keys(parts).forEach(function (id) {
        var el = document.getElementById(id);
        if (el) el.innerHTML = parts[id];
      });
      tickAges();
      document.body.setAttribute("data-live", "live");
    });
    source.onerror = function () { document.body.setAttribute("data-live", "reconnecting"); };
  }

  document.addEventListener("DOMContentLoaded", function () {
    tickAges();
    setInterval(tickAges, 1000);
    var parts = document.querySelector("main [data-live]");
    if (parts && window.EventSource) followParts(parts.getAttribute("data-live"));
    var form = document.getElementById("filter");
    if (!form || !window.EventSource) return;
    var timer = null;
    form.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { filterChanged(form); }, 300);
    });
    form.addEventListener("submit", function (ev) { ev.preventDefault(); filterChanged(form); });
    connect();
  });
})();
