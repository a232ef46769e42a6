"""Style sheet and script inlined into ``index.html`` (no external file, no
CDN: the page works from ``file://``).

The script reads the page state from the URL fragment, e.g.
``#img=a&det=2&targets=cls,left&opacity=0.7``: ``img`` = image stem,
``det`` = detection index (0 = highest score), ``targets`` = the shown
targets (default: all), ``opacity`` = weight of the map over the image.
Clicking a detection or a control rewrites the fragment, so a view can be
bookmarked or linked.
"""

CSS = """
body{font-family:sans-serif;margin:1em;color:#222}
h1{font-size:1.4em}
.items{display:flex;flex-wrap:wrap;gap:12px}
.item{border:1px solid #ccc;border-radius:4px;padding:6px;width:330px}
.item h2{font-size:1em;margin:0 0 4px;overflow-wrap:anywhere}
.item img.thumb{display:block;max-width:100%;height:auto;background:#eee}
.item.video{width:auto}
ol.dets{margin:4px 0;padding-left:0;list-style:none;max-height:12em;
 overflow:auto;font-size:.9em}
ol.dets li{display:inline-block;margin:1px}
a.det{display:inline-block;padding:1px 5px;border:1px solid #bbb;
 border-radius:3px;text-decoration:none;color:#124}
a.det.active{background:#124;color:#fff}
.links{font-size:.85em}
#viewer{border:2px solid #124;border-radius:4px;padding:8px;
 margin-bottom:1em}
#viewer[hidden]{display:none}
#viewer .controls{margin:6px 0}
#viewer .controls label{margin-right:10px}
.panels{display:flex;flex-direction:column;gap:10px}
.panel{margin:0}
.stage{position:relative;max-width:100%}
.stage img{position:absolute;left:0;top:0;width:100%;height:100%}
.stage .box{position:absolute;border:2px solid #0f0;box-sizing:border-box;
 pointer-events:none}
.panel figcaption{font-weight:bold}
.thumbs img{height:96px;margin:2px}
"""

JS = r"""
(function () {
  'use strict';
  var DATA = JSON.parse(document.getElementById('gallery-data').textContent);
  var byStem = {};
  DATA.forEach(function (e) { byStem[e.stem] = e; });
  var state = {img: null, det: 0, targets: null, opacity: 0.5};

  function readHash() {
    var p = new URLSearchParams(location.hash.slice(1));
    state.img = p.get('img');
    state.det = parseInt(p.get('det') || '0', 10) || 0;
    var t = p.get('targets') || p.get('target');
    state.targets = t ? t.split(',').filter(Boolean) : null;
    var o = parseFloat(p.get('opacity'));
    state.opacity = isNaN(o) ? 0.5 : Math.min(1, Math.max(0, o));
  }

  function hashOf() {
    var s = 'img=' + encodeURIComponent(state.img) + '&det=' + state.det;
    if (state.targets) s += '&targets=' + state.targets.join(',');
    s += '&opacity=' + state.opacity;
    return '#' + s;
  }

  function go(push) {
    if (push) { location.hash = hashOf(); return; }  // hashchange renders
    history.replaceState(null, '', hashOf());
    render(false);
  }

  function el(tag, attrs, text) {
    var n = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      n.setAttribute(k, attrs[k]);
    });
    if (text !== undefined) n.textContent = text;
    return n;
  }

  function shown(e) {
    return e.targets.filter(function (t) {
      return !state.targets || state.targets.indexOf(t) >= 0;
    });
  }

  function panel(e, k, t) {
    var d = e.dets[k], w = e.width, h = e.height;
    var fig = el('figure', {'class': 'panel', 'data-target': t});
    fig.appendChild(el('figcaption', {}, t));
    var stage = el('div', {'class': 'stage'});
    stage.style.width = w + 'px';
    stage.style.aspectRatio = w + ' / ' + h;
    stage.appendChild(el('img', {'class': 'base', src: e.image, alt: e.stem}));
    var src = e.map.replace('{k}', k).replace('{t}', t);
    var heat = el('img', {'class': 'heat', src: src, 'data-det': k,
                          'data-target': t, alt: t + ' map'});
    heat.style.opacity = state.opacity;
    stage.appendChild(heat);
    var b = el('div', {'class': 'box'});
    b.style.left = (100 * d.box[0] / w) + '%';
    b.style.top = (100 * d.box[1] / h) + '%';
    b.style.width = (100 * (d.box[2] - d.box[0]) / w) + '%';
    b.style.height = (100 * (d.box[3] - d.box[1]) / h) + '%';
    b.style.borderColor = d.color;
    stage.appendChild(b);
    fig.appendChild(stage);
    return fig;
  }

  function controls(e) {
    var c = el('div', {'class': 'controls'});
    var lab = el('label', {}, 'opacity ');
    var r = el('input', {type: 'range', min: 0, max: 1, step: 0.05,
                         id: 'opacity', value: state.opacity});
    r.addEventListener('input', function () {
      state.opacity = parseFloat(r.value);
      document.querySelectorAll('#viewer img.heat').forEach(function (i) {
        i.style.opacity = state.opacity;
      });
      history.replaceState(null, '', hashOf());
    });
    lab.appendChild(r);
    c.appendChild(lab);
    e.targets.forEach(function (t) {
      var l = el('label', {});
      var cb = el('input', {type: 'checkbox', 'class': 'target', value: t});
      cb.checked = shown(e).indexOf(t) >= 0;
      cb.addEventListener('change', function () {
        var on = Array.prototype.filter.call(
          document.querySelectorAll('#viewer input.target'),
          function (x) { return x.checked; }).map(
          function (x) { return x.value; });
        state.targets = on.length === e.targets.length ? null : on;
        go(false);
      });
      l.appendChild(cb);
      l.appendChild(document.createTextNode(' ' + t));
      c.appendChild(l);
    });
    return c;
  }

  function render(scroll) {
    var v = document.getElementById('viewer');
    document.querySelectorAll('a.det.active').forEach(function (a) {
      a.classList.remove('active');
    });
    var e = state.img && byStem[state.img];
    if (!e || !e.dets.length) { v.hidden = true; v.textContent = ''; return; }
    var k = Math.min(Math.max(state.det, 0), e.dets.length - 1), d = e.dets[k];
    state.det = k;
    v.textContent = '';
    v.setAttribute('data-img', e.stem);
    v.setAttribute('data-det', k);
    var head = el('h2', {}, e.stem + ': #' + k + ' ' + d.name + ' ' +
                  d.score.toFixed(2) + ' ');
    head.appendChild(el('a', {href: '#'}, 'close'));
    v.appendChild(head);
    var ol = el('ol', {'class': 'dets'});
    e.dets.forEach(function (x, i) {
      var li = el('li', {});
      li.appendChild(el('a', {'class': 'det' + (i === k ? ' active' : ''),
                              href: '#img=' + e.stem + '&det=' + i,
                              'data-img': e.stem, 'data-det': i},
                        '#' + i + ' ' + x.name + ' ' + x.score.toFixed(2)));
      ol.appendChild(li);
    });
    v.appendChild(ol);
    v.appendChild(controls(e));
    var ps = el('div', {'class': 'panels'});
    shown(e).forEach(function (t) { ps.appendChild(panel(e, k, t)); });
    v.appendChild(ps);
    v.hidden = false;
    document.querySelectorAll(
      'a.det[data-img="' + e.stem + '"][data-det="' + k + '"]').forEach(
      function (a) { a.classList.add('active'); });
    if (scroll) v.scrollIntoView();
  }

  document.addEventListener('click', function (ev) {
    var a = ev.target.closest && ev.target.closest('a.det');
    if (!a) return;
    ev.preventDefault();
    state.img = a.getAttribute('data-img');
    state.det = parseInt(a.getAttribute('data-det'), 10);
    go(true);
  });
  window.addEventListener('hashchange', function () {
    readHash();
    render(true);
  });
  readHash();
  render(true);
  document.body.setAttribute('data-ready', '1');
})();
"""
