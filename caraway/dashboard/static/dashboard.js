// Live parts of a page: an element with data-refresh="URL" is re-fetched every
// data-every milliseconds (default 1000) and its content replaced, while the tab is visible
// and nobody is typing into a form inside it (a refresh would wipe what was typed).
(function () {
  function typing(element) {
    var active = document.activeElement;
    return active !== null && element.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
  }
  function refresh(element) {
    if (document.hidden || typing(element)) { return; }
    fetch(element.dataset.refresh, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html !== null) { element.innerHTML = html; } })
      .catch(function () { /* the next round tries again */ });
  }
  document.querySelectorAll("[data-refresh]").forEach(function (element) {
    var every = parseInt(element.dataset.every || "1000", 10);
    setInterval(function () { refresh(element); }, every);
  });
  // Forms that change something for good ask first (data-confirm="question").
  document.addEventListener("submit", function (event) {
    var question = event.target.dataset.confirm;
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
})();
