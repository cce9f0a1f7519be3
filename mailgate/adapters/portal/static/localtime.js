// Times in the reader's own time zone and words. The server writes every moment as
// <time datetime="2026-03-12T09:02:00+00:00">12 mars 2026 10:02</time>, in the zone it knows
// for the reader (their account's, this script's cookie, else the site's); this rewrites the text with the browser's time zone and a locale of
// the page's language (the browser's own variant of it, when it has one: en-GB, fr-CA), and
// keeps the server's text as the tooltip. Times without a date part (a bare "HH:MM") are left be.
(function () {
  'use strict';
  if (typeof Intl === 'undefined' || !Intl.DateTimeFormat) return;

  // The browser's time zone, for the server: pages (and the account, once signed in) use it.
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && /^[A-Za-z0-9_+\/-]{1,64}$/.test(zone) &&
        document.cookie.split('; ').indexOf('mg_tz=' + zone) === -1) {
      document.cookie = 'mg_tz=' + zone + '; path=/; max-age=31536000; samesite=lax' +
        (location.protocol === 'https:' ? '; secure' : '');
    }
  } catch (e) { /* no zone: the site's default stays */ }

  function locale() {
    var page = (document.documentElement.lang || 'en').toLowerCase();
    var wanted = navigator.languages || [navigator.language || page];
    for (var i = 0; i < wanted.length; i++) {
      if (wanted[i] && wanted[i].toLowerCase().split('-')[0] === page) return wanted[i];
    }
    return page;
  }

  // The server's own style (Babel's medium date, short time): "2 déc. 2026, 10:02",
  // "Dec 2, 2026, 10:02 AM", rather than all-digit dates an English reader may misread.
  var format;
  try {
    format = new Intl.DateTimeFormat(locale(), {dateStyle: 'medium', timeStyle: 'short'});
  } catch (e) {
    try {
      format = new Intl.DateTimeFormat(locale(), {
        year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit'
      });
    } catch (e2) {
      return;
    }
  }

  document.querySelectorAll('time[datetime]').forEach(function (node) {
    var value = node.getAttribute('datetime');
    if (!/^\d{4}-\d{2}-\d{2}T/.test(value)) return;
    var moment = new Date(value);
    if (isNaN(moment.getTime())) return;
    if (!node.title) node.title = node.textContent;
    node.textContent = format.format(moment);
    node.setAttribute('data-local', '');
  });
})();
