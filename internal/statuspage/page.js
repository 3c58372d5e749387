"use strict";
(function () {
  var main = document.getElementById("main");
  var live = document.getElementById("live");
  var every = 2000;
  function stamp(t) { return t.toISOString().slice(11, 19) + " UTC"; }
  function refresh() {
    fetch("status?part=main", { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (html) {
        main.innerHTML = html;
        live.className = "live on";
        live.textContent = "live · updated " + stamp(new Date());
      })
      .catch(function (e) {
        live.className = "live err";
        live.textContent = "not updating (" + e.message + ") · last " + live.dataset.last;
      })
      .finally(function () { live.dataset.last = stamp(new Date()); setTimeout(refresh, every); });
  }
  live.className = "live on";
  live.textContent = "live";
  setTimeout(refresh, every);
})();
