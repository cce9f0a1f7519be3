// Progressive enhancement only: every form works without this file.
// Attachment fields accept files dropped anywhere on their zone, and list what is chosen.
(function () {
  'use strict';

  function formatSize(bytes) {
    if (bytes < 1024) return bytes + ' B';
    if (bytes < 1024 * 1024) return Math.round(bytes / 1024) + ' KB';
    return (bytes / 1024 / 1024).toFixed(1) + ' MB';
  }

  function showFiles(input, list, zone) {
    list.textContent = '';
    var total = 0;
    Array.prototype.forEach.call(input.files, function (file) {
      var item = document.createElement('li');
      item.textContent = file.name + ' (' + formatSize(file.size) + ')';
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
