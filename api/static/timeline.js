// Progressive enhancement: without script the page is complete as of its loading.
(function () {
  var list = document.getElementById('timeline');
  if (!list || !window.EventSource) { return; }
  var shown = list.children.length;
  var source = new EventSource(list.getAttribute('data-events'));
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
    item.append(at, ' ', phase, ' ', message);
    list.appendChild(item);
    shown = position;
  });
  source.addEventListener('status', function (event) {
    var status = JSON.parse(event.data).status, badge = document.getElementById('deployment-status');
    badge.className = 'status status-' + status;
    badge.textContent = status.replace(/_/g, ' ');
  });
  // The verdict brings the diagnostics and the final state of every resource.
  source.addEventListener('verdict', function () { source.close(); window.location.reload(); });
})();
