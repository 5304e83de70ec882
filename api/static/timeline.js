// Progressive enhancement: without script the page is complete as of its loading.
(function () {
  var list = document.getElementById('timeline');
  if (!list || !window.EventSource || !list.getAttribute('data-events')) { return; }
  var shown = list.children.length;
  var verdicts = ['succeeded', 'failed', 'timed_out', 'cancelled'];
  var source = new EventSource(list.getAttribute('data-events'));
  var pictureUrl = list.getAttribute('data-picture'), fetching = false, again = false;
  var spoken = document.getElementById('rollout-status');
  // Draws the rollout picture again from the server: one request at a time, and one
  // more if news came meanwhile.
  function refreshPicture() {
    var current = document.getElementById('rollout-picture');
    if (!pictureUrl || !current || !window.fetch) { return; }
    if (fetching) { again = true; return; }
    fetching = true;
    fetch(pictureUrl, { credentials: 'same-origin', cache: 'no-store' })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var parsed = new DOMParser().parseFromString(html, 'text/html');
        var fresh = parsed.getElementById('rollout-picture');
        var now = document.getElementById('rollout-picture');
        if (!fresh || !now) { return; }
        now.replaceWith(document.importNode(fresh, true));
        if (spoken) {
          var said = [];
          fresh.querySelectorAll('.workload-summary').forEach(function (p) { said.push(p.textContent); });
          if (said.join(' ') !== spoken.textContent) { spoken.textContent = said.join(' '); }
        }
      })
      .catch(function () {})
      .then(function () {
        fetching = false;
        if (again) { again = false; refreshPicture(); }
      });
  }
  // Each entry's id is its position in the timeline; a reconnect sends Last-Event-ID
  // and the server resumes after it, so an entry is shown once by its position.
  source.addEventListener('timeline', function (event) {
    var position = parseInt(event.lastEventId, 10);
    if (!(position > shown)) { return; }
    var entry = JSON.parse(event.data), item = document.createElement('li');
    var at = document.createElement('time'), phase = document.createElement('span');
    var message = document.createElement('span');
    at.setAttribute('datetime', entry.at);
    at.textContent = entry.at.replace('T', ' ').replace(/\.\d+/, '').replace(/(Z|\+00:00)$/, ' UTC');
    phase.className = 'status status-' + entry.phase;
    phase.textContent = entry.phase.replace(/_/g, ' ');
    message.className = 'message';
    message.textContent = (entry.resource ? entry.resource + ' ' : '') + entry.message;
    item.className = 'phase-' + entry.phase;
    // The moment of the verdict: the first line in a final phase.
    if (verdicts.indexOf(entry.phase) >= 0 && !list.querySelector('li.verdict')) {
      var mark = document.createElement('strong');
      mark.className = 'verdict-mark';
      mark.textContent = 'Verdict';
      item.className += ' verdict';
      item.append(mark, ' ');
    }
    item.append(at, ' ', phase, ' ', message);
    list.appendChild(item);
    shown = position;
    refreshPicture();
  });
  source.addEventListener('status', function (event) {
    var status = JSON.parse(event.data).status, badge = document.getElementById('deployment-status');
    badge.className = 'status status-' + status;
    badge.textContent = status.replace(/_/g, ' ');
    refreshPicture();
  });
  // The verdict brings the diagnostics, the final state of every resource and the
  // actions that fit a finished deployment: show the page as it is now.
  source.addEventListener('verdict', function () {
    source.close();
    window.setTimeout(function () { window.location.reload(); }, 1500);
  });
})();
