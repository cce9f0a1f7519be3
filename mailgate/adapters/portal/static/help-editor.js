/* Help centre editor: a live preview of the Markdown, rendered (and sanitised) by the server
   exactly as readers will see it. Without JavaScript the "Preview" button does the same. */
(function () {
  "use strict";
  var body = document.querySelector("textarea[data-preview]");
  if (!body) { return; }
  var target = document.getElementById(body.getAttribute("data-preview"));
  var url = body.getAttribute("data-preview-url");
  var csrf = body.form.querySelector("input[name=csrf]");
  var timer = null;

  function render() {
    var data = new FormData();
    data.append("csrf", csrf ? csrf.value : "");
    data.append("body", body.value);
    var original = body.form.querySelector("input[name=original]");
    data.append("original", original ? original.value : "");  // its images in the preview
    fetch(url, { method: "POST", body: data, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) { target.innerHTML = html; } })
      .catch(function () {});
  }

  body.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(render, 300);
  });
  render();
})();
