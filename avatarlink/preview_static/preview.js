// avatarlink browser preview: draws what the tracker sees from the /events stream.
// Everything comes from this server (config.json, events); the page makes no other requests.
'use strict';

(() => {
  const state = {
    config: null,
    view: 'smoothed',
    connected: false,
    framesReceived: 0,
    framesDrawn: 0,
    segmentsDrawn: 0,   // skeleton segments drawn on the camera canvas in the last frame
    bonesDrawn: 0,      // segments drawn in the 3D view in the last frame
    lastMessage: null,
    yaw: 0.5,
    pitch: 0.2,
    zoom: 1.0,
  };
  window.avatarlinkPreview = state; // for debugging and automated checks

  const imageCanvas = document.getElementById('image');
  const rigCanvas = document.getElementById('rig3d');
  const statusEl = document.getElementById('status');
  const summaryEl = document.getElementById('summary');
  const timingsEl = document.getElementById('timings');
  const statsBody = document.querySelector('#stats tbody');
  const rigTitle = document.getElementById('rig-title');

  // Same scale as avatarlink.draw.confidence_colour: red (0) -> yellow (0.5) -> green (1).
  function confidenceColour(score) {
    const s = Math.min(1, Math.max(0, score === null ? 0 : score));
    const r = Math.round(255 * Math.min(1, 2 * (1 - s)));
    const g = Math.round(255 * Math.min(1, 2 * s));
    return `rgb(${r},${g},0)`;
  }

  function setStatus(text, cls) {
    statusEl.textContent = text;
    statusEl.className = `status ${cls}`;
  }

  // --- camera view ----------------------------------------------------------------------------

  function drawPeople(ctx, people, edges, scale, style) {
    let segments = 0;
    const width = Math.max(2, Math.round(ctx.canvas.width / 250));
    ctx.lineCap = 'round';
    for (const person of people) {
      ctx.globalAlpha = style.alpha;
      ctx.lineWidth = style.thin ? Math.max(1, width / 2) : width;
      ctx.setLineDash(style.dashed ? [4, 4] : []);
      for (const [a, b] of edges) {
        const pa = person[a];
        const pb = person[b];
        if (!pa || !pb || pa[0] === null || pb[0] === null) continue;
        ctx.strokeStyle = confidenceColour(Math.min(pa[2], pb[2]));
        ctx.beginPath();
        ctx.moveTo(pa[0] * scale, pa[1] * scale);
        ctx.lineTo(pb[0] * scale, pb[1] * scale);
        ctx.stroke();
        segments += 1;
      }
      ctx.setLineDash([]);
      for (const p of person) {
        if (!p || p[0] === null) continue;
        ctx.fillStyle = confidenceColour(p[2]);
        ctx.beginPath();
        ctx.arc(p[0] * scale, p[1] * scale, (style.thin ? 0.6 : 1) * (width + 1), 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    ctx.globalAlpha = 1;
    return segments;
  }

  function drawCamera(msg, img) {
    if (imageCanvas.width !== msg.width || imageCanvas.height !== msg.height) {
      imageCanvas.width = msg.width;
      imageCanvas.height = msg.height;
    }
    const ctx = imageCanvas.getContext('2d');
    ctx.drawImage(img, 0, 0, msg.width, msg.height);
    const layout = state.config.layouts[msg.layout];
    const edges = layout ? layout.edges : [];
    let segments = 0;
    if (state.view === 'raw' || state.view === 'both') {
      const style = state.view === 'both' ? { alpha: 0.7, thin: true, dashed: true } : { alpha: 1 };
      segments += drawPeople(ctx, msg.raw, edges, 1, style);
    }
    if (state.view === 'smoothed' || state.view === 'both') {
      segments += drawPeople(ctx, msg.smoothed, edges, 1, { alpha: 1 });
    }
    state.segmentsDrawn = segments;
  }

  // --- 3D view: orbit camera, perspective projection on a plain 2D canvas ------------------------

  function sideOf(name) {
    const n = name.toLowerCase();
    if (n.startsWith('left')) return 'left';
    if (n.startsWith('right')) return 'right';
    return 'centre';
  }

  function projector(centre, canvas) {
    const cy = Math.cos(state.yaw), sy = Math.sin(state.yaw);
    const cp = Math.cos(state.pitch), sp = Math.sin(state.pitch);
    const distance = 3.2 / state.zoom;
    const focal = 0.9 * canvas.height;
    return (p) => {
      const x0 = p[0] - centre[0], y0 = p[1] - centre[1], z0 = p[2] - centre[2];
      const x1 = cy * x0 + sy * z0;          // orbit about +Y
      const z1 = -sy * x0 + cy * z0;
      const y2 = cp * y0 - sp * z1;          // then tilt about +X
      const z2 = sp * y0 + cp * z1;
      const depth = Math.max(0.05, distance - z2);
      return [canvas.width / 2 + focal * x1 / depth, canvas.height / 2 - focal * y2 / depth, depth];
    };
  }

  function drawRig(msg) {
    const ctx = rigCanvas.getContext('2d');
    const css = getComputedStyle(document.documentElement);
    const colours = {
      left: css.getPropertyValue('--left').trim() || '#4fc3f7',
      right: css.getPropertyValue('--right').trim() || '#ff8a65',
      centre: css.getPropertyValue('--centre').trim() || '#e0e0e0',
    };
    ctx.fillStyle = '#0d0e11';
    ctx.fillRect(0, 0, rigCanvas.width, rigCanvas.height);
    let people = [];
    let parents = [];
    let names = [];
    let floor = 0;
    if (msg.joints && state.config.rig) {
      people = msg.joints;
      parents = state.config.rig.parents;
      names = state.config.rig.bones;
      rigTitle.textContent = `Rig (${state.config.rig.name})`;
    } else if (msg.world) {
      const layout = state.config.layouts[msg.world_layout];
      people = msg.world;
      names = layout.names;
      parents = null;
      floor = -0.95;
      rigTitle.textContent = 'World keypoints (no rig)';
    }
    // Rig joints: centre on the hips (joint 0) at chest height; world keypoints are hip-centred.
    const first = people.length ? people[0] : null;
    const hips = parents && first && first[0] && first[0][0] !== null ? first[0] : [0, 0, 0];
    const centre = parents ? [hips[0], 0.9, hips[2]] : [0, 0, 0];
    const project = projector(centre, rigCanvas);
    // Floor grid, 0.5 m squares around the performer.
    ctx.strokeStyle = '#2c3038';
    ctx.lineWidth = 1;
    for (let i = -4; i <= 4; i += 1) {
      for (const [a, b] of [[[i / 2, floor, -2], [i / 2, floor, 2]], [[-2, floor, i / 2], [2, floor, i / 2]]]) {
        const pa = project([a[0] + centre[0], a[1], a[2] + centre[2]]);
        const pb = project([b[0] + centre[0], b[1], b[2] + centre[2]]);
        ctx.beginPath(); ctx.moveTo(pa[0], pa[1]); ctx.lineTo(pb[0], pb[1]); ctx.stroke();
      }
    }
    let bones = 0;
    const segments = [];
    for (const person of people) {
      const pts = person.map((p) => (p && p[0] !== null ? project(p) : null));
      const pairs = parents
        ? parents.map((p, j) => [p, j]).filter(([p]) => p >= 0)
        : state.config.layouts[msg.world_layout].edges;
      for (const [a, b] of pairs) {
        if (!pts[a] || !pts[b]) continue;
        segments.push({ a: pts[a], b: pts[b], side: sideOf(names[b]), depth: (pts[a][2] + pts[b][2]) / 2 });
      }
    }
    segments.sort((s, t) => t.depth - s.depth); // far first
    for (const s of segments) {
      ctx.strokeStyle = colours[s.side];
      ctx.lineWidth = Math.max(2, 7 / s.depth);
      ctx.lineCap = 'round';
      ctx.beginPath(); ctx.moveTo(s.a[0], s.a[1]); ctx.lineTo(s.b[0], s.b[1]); ctx.stroke();
      bones += 1;
    }
    state.bonesDrawn = bones;
    if (!people.length) {
      ctx.fillStyle = '#9aa0aa';
      ctx.font = '14px sans-serif';
      const seen = msg.smoothed.length > 0;
      ctx.fillText(seen ? 'no 3D pose for this frame (no rotations solved)' : 'no person', 12, 24);
    }
  }

  // Orbit with the mouse (or a finger), zoom with the wheel.
  let drag = null;
  rigCanvas.addEventListener('pointerdown', (e) => {
    drag = { x: e.clientX, y: e.clientY };
    rigCanvas.setPointerCapture(e.pointerId);
  });
  rigCanvas.addEventListener('pointermove', (e) => {
    if (!drag) return;
    state.yaw += (e.clientX - drag.x) * 0.01;
    state.pitch = Math.max(-1.4, Math.min(1.4, state.pitch + (e.clientY - drag.y) * 0.01));
    drag = { x: e.clientX, y: e.clientY };
    if (state.lastMessage) drawRig(state.lastMessage);
  });
  rigCanvas.addEventListener('pointerup', () => { drag = null; });
  rigCanvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    state.zoom = Math.max(0.3, Math.min(4, state.zoom * Math.exp(-e.deltaY * 0.001)));
    if (state.lastMessage) drawRig(state.lastMessage);
  }, { passive: false });
  document.getElementById('reset-view').addEventListener('click', () => {
    state.yaw = 0.5; state.pitch = 0.2; state.zoom = 1.0;
    if (state.lastMessage) drawRig(state.lastMessage);
  });

  // --- numbers --------------------------------------------------------------------------------

  function fmt(v, digits) {
    return v === null || v === undefined || Number.isNaN(v) ? '\u2013' : Number(v).toFixed(digits);
  }

  function drawStats(msg) {
    // 'total' is the whole loop iteration (capture overlaps it in its own thread), not a stage.
    const stages = Object.entries(msg.timings_ms).filter(([name]) => name !== 'total');
    const total = 'total' in msg.timings_ms
      ? msg.timings_ms.total
      : stages.reduce((s, [, v]) => s + v, 0);
    const full = Math.max(1000 / 30, total);
    timingsEl.replaceChildren(...stages.map(([name, ms]) => {
      const row = document.createElement('div');
      row.className = 'timing';
      const label = document.createElement('span');
      label.textContent = name;
      const track = document.createElement('div');
      track.className = 'track';
      const fill = document.createElement('div');
      fill.className = 'fill';
      fill.style.width = `${Math.min(100, (100 * ms) / full)}%`;
      track.appendChild(fill);
      const value = document.createElement('span');
      value.className = 'ms';
      value.textContent = `${fmt(ms, 1)} ms`;
      row.append(label, track, value);
      return row;
    }));
    const st = msg.stats || {};
    const rows = [
      ['frame', msg.frame],
      ['fps', fmt(st.fps, 1)],
      ['latency', `${fmt(msg.latency_ms, 1)} ms`],
      ['loop time', `${fmt(total, 1)} ms`],
      ['provider', msg.provider],
      ['dropped frames', fmt(st.dropped, 0)],
      ['packets sent', fmt(st.packets_sent, 0)],
    ];
    for (const [key, value] of Object.entries(st)) {
      const m = /^packets_sent\[(.*)\]$/.exec(key);
      if (m) rows.push([`\u2192 ${m[1]}`, fmt(value, 0)]);
    }
    for (const [key, value] of Object.entries(st)) {
      if (!['fps', 'dropped', 'packets_sent'].includes(key) && !key.startsWith('packets_sent[')) {
        rows.push([key, fmt(value, 1)]);
      }
    }
    rows.push(['skipped for slow viewers', msg.viewer_skipped]);
    statsBody.replaceChildren(...rows.map(([k, v]) => {
      const tr = document.createElement('tr');
      const a = document.createElement('td');
      const b = document.createElement('td');
      a.textContent = k;
      b.textContent = String(v);
      tr.append(a, b);
      return tr;
    }));
    summaryEl.textContent = `${fmt(st.fps, 1)} fps \u00b7 ${fmt(msg.latency_ms, 1)} ms \u00b7 ${msg.provider}`;
  }

  // --- stream ---------------------------------------------------------------------------------

  let pending = null;
  let busy = false;

  function drawNext() {
    const msg = pending;
    pending = null;
    if (!msg) return;
    busy = true;
    const img = new Image();
    img.onload = () => {
      drawCamera(msg, img);
      drawRig(msg);
      drawStats(msg);
      state.lastMessage = msg;
      state.framesDrawn += 1;
      busy = false;
      if (pending) drawNext();
    };
    img.onerror = () => { busy = false; if (pending) drawNext(); };
    img.src = `data:image/jpeg;base64,${msg.jpeg}`;
  }

  function connect() {
    const events = new EventSource('events');
    events.onopen = () => { state.connected = true; setStatus('waiting for frames', 'waiting'); };
    events.onmessage = (e) => {
      state.framesReceived += 1;
      pending = JSON.parse(e.data); // only the newest frame is drawn; older ones are skipped
      setStatus('live', 'live');
      if (!busy) drawNext();
    };
    events.onerror = () => { state.connected = false; setStatus('disconnected, retrying', 'lost'); };
  }

  for (const input of document.querySelectorAll('input[name=view]')) {
    input.addEventListener('change', () => {
      state.view = input.value;
      if (state.lastMessage) {
        pending = pending || state.lastMessage;
        if (!busy) drawNext();
      }
    });
  }

  fetch('config.json')
    .then((r) => r.json())
    .then((config) => {
      state.config = config;
      if (config.rig) rigTitle.textContent = `Rig (${config.rig.name})`;
      connect();
    })
    .catch(() => setStatus('cannot load config.json', 'lost'));
})();
