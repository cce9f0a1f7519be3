// Progressive enhancement only: every form works without this file.
// Attachment fields accept files dropped anywhere on their zone, and list what is chosen.
(function () {
  'use strict';

  // The units come from the page's catalogue ("{n} Ko" / "{n} KB"), the number in the page's
  // language, as the server writes sizes (issue 15).
  function formatSize(bytes, zone) {
    var lang = document.documentElement.lang || undefined;
    function unit(name, n) {
      var pattern = zone.getAttribute('data-size-' + name) || '{n}';
      return pattern.replace('{n}', n.toLocaleString(lang, {maximumFractionDigits: 1}));
    }
    if (bytes < 1024) return unit('bytes', bytes);
    if (bytes < 1024 * 1024) return unit('kb', Math.round(bytes / 1024));
    return unit('mb', Math.round(bytes / 1024 / 1024 * 10) / 10);
  }

  function showFiles(input, list, zone) {
    list.textContent = '';
    var total = 0;
    Array.prototype.forEach.call(input.files, function (file) {
      var item = document.createElement('li');
      item.textContent = file.name + ' (' + formatSize(file.size, zone) + ')';
      list.appendChild(item);
      total += file.size;
    });
    // Say it now rather than after a long upload the server will refuse.
    var max = parseInt(zone.getAttribute('data-max-bytes') || '0', 10);
    if (max && total > max) {
      var warning = document.createElement('li');
      warning.className = 'error';
      warning.textContent = zone.getAttribute('data-too-big');
      list.appendChild(warning);
    }
  }

  function enhance(zone) {
    var input = zone.querySelector('input[type=file]');
    var list = zone.querySelector('[data-files]');
    if (!input || !list) return;
    // The browser's own "Choose Files / No file chosen" is in the browser's language, not the
    // page's: a button in the page's words opens the same input, and the list says what is
    // chosen (issue 15). Without this script the native input shows, and works.
    var choose = zone.getAttribute('data-choose');
    if (choose) {
      var button = document.createElement('button');
      button.type = 'button';
      button.className = 'secondary choose-files';
      button.textContent = choose;
      button.addEventListener('click', function () { input.click(); });
      input.parentNode.insertBefore(button, input);
      input.tabIndex = -1;
    }
    input.addEventListener('change', function () { showFiles(input, list, zone); });
    ['dragenter', 'dragover'].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        event.preventDefault();
        zone.classList.add('dragging');
      });
    });
    ['dragleave', 'dragend'].forEach(function (type) {
      zone.addEventListener(type, function () { zone.classList.remove('dragging'); });
    });
    zone.addEventListener('drop', function (event) {
      event.preventDefault();
      zone.classList.remove('dragging');
      if (!event.dataTransfer || !event.dataTransfer.files.length) return;
      // Keep what was already chosen and add the dropped files.
      var merged = new DataTransfer();
      Array.prototype.forEach.call(input.files, function (f) { merged.items.add(f); });
      Array.prototype.forEach.call(event.dataTransfer.files, function (f) { merged.items.add(f); });
      input.files = merged.files;
      showFiles(input, list, zone);
    });
    zone.classList.add('enhanced');
  }

  document.querySelectorAll('[data-dropzone]').forEach(enhance);
})();
