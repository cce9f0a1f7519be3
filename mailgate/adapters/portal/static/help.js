/* Help centre: suggest articles while the subject of a new request is typed (issue 13).
   The server sends titles as text and passages already sanitised (only <mark> inside). */
(function () {
  "use strict";
  var me = document.currentScript;
  var subject = document.getElementById("subject");
  if (!me || !subject || !subject.form || !/\/tickets\/new$/.test(subject.form.getAttribute("action") || "")) {
    return;
  }
  var endpoint = me.getAttribute("data-suggest");
  var box = document.createElement("div");
  box.className = "help-suggestions";
  box.id = "help-suggestions";
  box.setAttribute("aria-live", "polite");
  box.hidden = true;
  subject.parentNode.appendChild(box);
  var timer = null;
  var asked = "";

  function show(articles) {
    box.textContent = "";
    if (!articles.length) { box.hidden = true; return; }
    var heading = document.createElement("p");
    heading.className = "help-suggestions-heading";
    heading.textContent = me.getAttribute("data-heading");
    var list = document.createElement("ul");
    articles.forEach(function (a) {
      var item = document.createElement("li");
      var link = document.createElement("a");
      link.href = a.url;
      link.target = "_blank";
      link.rel = "noopener";
      link.textContent = a.title;
      item.appendChild(link);
      if (a.passage) {
        var passage = document.createElement("p");
        passage.className = "help-passage";
        passage.innerHTML = a.passage;
        item.appendChild(passage);
      }
      list.appendChild(item);
    });
    box.appendChild(heading);
    box.appendChild(list);
    box.hidden = false;
  }

  function ask() {
    var q = subject.value.trim();
    if (q === asked) { return; }
    asked = q;
    if (q.length < 3) { show([]); return; }
    fetch(endpoint + "?q=" + encodeURIComponent(q), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : { articles: [] }; })
      .then(function (data) { if (q === asked) { show(data.articles || []); } })
      .catch(function () { /* suggestions are a help, never a blocker */ });
  }

  subject.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(ask, 250);
  });
  if (subject.value.trim()) { ask(); }
})();
