// Paz web UI: live fragments over SSE, relative times, following logs, confirmations and
// the services filter. Every page works without this script except for live updates.
(function () {
  'use strict';
  document.documentElement.classList.add('js');

  // Times: "3 min ago" (or an age, "3 min") from the datetime attribute, kept current.
  function span(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min';
    if (s < 86400) return Math.floor(s / 3600) + ' h';
    return Math.floor(s / 86400) + ' d';
  }
  function words(root) {
    var now = Date.now();
    root.querySelectorAll('time[data-rel]').forEach(function (t) {
      var at = Date.parse(t.dateTime);
      if (isNaN(at)) return;
      var s = (now - at) / 1000;
      t.textContent = t.dataset.rel === 'age' ? span(s) : (s < 0 ? 'in ' + span(-s) : span(s) + ' ago');
    });
  }
  words(document);
  setInterval(function () { words(document); }, 5000);

  var main = document.getElementById('main');
  function banner(text) {
    var p = document.createElement('p');
    p.className = 'notice bad';
    p.setAttribute('role', 'alert');
    p.textContent = text;
    if (main) main.insertBefore(p, main.firstChild);
  }

  // Dangerous forms say what they will do before they do it.
  document.addEventListener('submit', function (e) {
    var message = e.target.dataset && e.target.dataset.confirm;
    if (message && !window.confirm(message)) e.preventDefault();
  });

  // The services filter, as you type (the form filters on the server without the script).
  var q = document.getElementById('q');
  function filter() {
    var table = document.getElementById('services-table');
    if (!q || !table) return;
    var needle = q.value.trim().toLowerCase();
    var shown = 0, all = 0;
    table.querySelectorAll('tbody tr').forEach(function (tr) {
      all++;
      var hit = !needle || (tr.dataset.search || '').indexOf(needle) >= 0;
      tr.hidden = !hit;
      if (hit) shown++;
    });
    var count = document.querySelector('.count');
    if (count && needle) count.textContent = shown + ' of ' + all + ' services';
  }
  if (q) q.addEventListener('input', filter);

  // Live fragments: the server sends a part of the page again when what it shows changes.
  var state = document.getElementById('live-state');
  function say(text, kind) {
    if (!state) return;
    state.textContent = text;
    state.className = 'live-state ' + (kind || '');
  }
  var held = {};
  function apply(f) {
    var el = document.getElementById(f.id);
    if (!el || el.dataset.v === f.v) return;
    var active = document.activeElement;
    if (active && el.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) {
      // Never replace what someone is typing in: apply it once they leave the field.
      if (!held[f.id]) {
        active.addEventListener('blur', function () {
          var later = held[f.id];
          delete held[f.id];
          if (later) apply(later);
        }, { once: true });
      }
      held[f.id] = f;
      return;
    }
    var focused = active && el.contains(active) ? active.id : '';
    var template = document.createElement('template');
    template.innerHTML = f.html;
    var fresh = template.content.firstElementChild;
    if (!fresh) return;
    words(fresh);
    el.replaceWith(fresh);
    filter();
    if (focused) {
      var again = document.getElementById(focused);
      if (again) again.focus();
    }
  }
  // A page left for another closes its streams (a browser keeps only a few connections per
  // server, and keeps left pages in its back-forward cache); shown again, it reconnects and
  // the server sends every fragment afresh.
  function stream(url, setup) {
    var source = null;
    function open() {
      source = new EventSource(url);
      setup(source);
    }
    window.addEventListener('pagehide', function () { if (source) source.close(); });
    window.addEventListener('pageshow', function (e) { if (e.persisted) open(); });
    open();
  }
  var live = document.body.dataset.live;
  if (live && window.EventSource) {
    stream(live, function (source) {
      source.addEventListener('open', function () { say('live', 'on'); });
      source.addEventListener('fragment', function (e) { apply(JSON.parse(e.data)); });
      source.addEventListener('gone', function (e) {
        source.close();
        say('gone', 'bad');
        banner(JSON.parse(e.data).message + '. It no longer exists.');
      });
      source.addEventListener('signed_out', function () {
        source.close();
        say('signed out', 'bad');
        banner('You are signed out: sign in again for live updates.');
      });
      source.addEventListener('error', function () {
        if (source.readyState === EventSource.CLOSED) say('offline', 'bad');
        else say('reconnecting…', 'warn');
      });
    });
  }

  // Logs: follow the stream, pause (new lines are held, up to a bound), search, download.
  var log = document.getElementById('log');
  if (log && log.dataset.stream && window.EventSource) {
    var MAX = 5000;
    var follow = document.getElementById('log-follow');
    var pause = document.getElementById('log-pause');
    var info = document.getElementById('log-status');
    var search = document.getElementById('log-q');
    var paused = false, waiting = [], queue = [], dropped = 0, timer = 0;
    var matches = function (text) {
      var needle = search && search.value.trim().toLowerCase();
      return !needle || text.toLowerCase().indexOf(needle) >= 0;
    };
    var row = function (line) {
      var div = document.createElement('div');
      div.className = line.e ? 'line err' : 'line';
      var who = document.createElement('span');
      who.className = 'inst';
      who.textContent = line.i;
      var text = document.createElement('span');
      text.className = 'text';
      text.textContent = line.t;
      div.appendChild(who);
      div.appendChild(text);
      if (!matches(line.t)) div.hidden = true;
      return div;
    };
    var show = function () {
      var parts = [];
      if (paused) parts.push('Paused: ' + waiting.length + ' new lines held');
      if (dropped) parts.push(dropped + ' lines dropped (they came faster than this page read them)');
      info.textContent = parts.join(' · ');
    };
    var add = function (lines) {
      var batch = document.createDocumentFragment();
      lines.forEach(function (line) { batch.appendChild(row(line)); });
      log.appendChild(batch);
      while (log.childElementCount > MAX) log.firstElementChild.remove();
      if (follow.checked) log.scrollTop = log.scrollHeight;
    };
    var flush = function () {
      timer = 0;
      var lines = queue;
      queue = [];
      add(lines);
    };
    stream(log.dataset.stream, function (logs) {
      logs.addEventListener('error', function () {
        if (logs.readyState === EventSource.CLOSED) say('offline', 'bad');
        else say('reconnecting…', 'warn');
      });
      logs.addEventListener('open', function () {
        say('following', 'on');
        // The stream starts again from the last lines: show those instead of the page's.
        log.textContent = '';
        queue = [];
      });
      logs.addEventListener('line', function (e) {
        var line = JSON.parse(e.data);
        var into = paused ? waiting : queue;
        into.push(line);
        if (into.length > MAX) { into.shift(); dropped++; }
        if (paused) { show(); return; }
        if (!timer) timer = setTimeout(flush, 40);
      });
      logs.addEventListener('dropped', function (e) { dropped += Number(e.data) || 0; show(); });
      logs.addEventListener('end', function () {
        logs.close();
        if (timer) { clearTimeout(timer); flush(); }
        say('ended', '');
        info.textContent = 'The instances stopped: no more output.';
      });
    });
    pause.addEventListener('click', function () {
      paused = !paused;
      pause.setAttribute('aria-pressed', String(paused));
      pause.textContent = paused ? 'Resume' : 'Pause';
      if (!paused) { add(waiting); waiting = []; }
      show();
    });
    follow.addEventListener('change', function () {
      if (follow.checked) log.scrollTop = log.scrollHeight;
    });
    search.addEventListener('input', function () {
      log.querySelectorAll('.line').forEach(function (div) {
        div.hidden = !matches(div.lastChild.textContent);
      });
    });
    search.form.addEventListener('submit', function (e) { e.preventDefault(); });
  }
})();
