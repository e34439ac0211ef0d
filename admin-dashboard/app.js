// TopGun admin dashboard: a dependency-free single-page app served by the gateway under /admin/.
// Hash routes: #/login, #/cluster, #/maps, #/settings. API calls go to the same origin
// (http-admin-ops.md §4.12-4.13).

const TOKEN_KEY = 'topgun_admin_token';
const STATUS_POLL_MS = 5000;
const METRICS_POLL_MS = 2000;
const VIEW_POLL_MS = 5000;
const SPARK_POINTS = 30;

// Settings in display order; `edit` marks the runtime-changeable ones (§4.6).
const SETTINGS = [
  { key: 'nodeId', label: 'Node ID' },
  { key: 'host', label: 'Host' },
  { key: 'port', label: 'Port' },
  { key: 'partitionCount', label: 'Partition count' },
  { key: 'defaultOperationTimeoutMs', label: 'Operation timeout (ms)' },
  { key: 'requireAuth', label: 'Require auth' },
  { key: 'maxValueBytes', label: 'Max value bytes' },
  { key: 'logLevel', label: 'Log level', edit: 'string', hint: 'tracing filter, e.g. info,topgun=debug' },
  { key: 'gcIntervalMs', label: 'GC interval (ms)', edit: 'int', hint: '≥ 1000' },
  { key: 'maxConcurrentOperations', label: 'Max concurrent operations', edit: 'int', hint: '1 – 1 000 000' },
];

const state = {
  status: null, // last /api/status body
  statusError: null,
  metrics: null, // { at, connections, operations, opErrors, messagesIn }
  metricsError: null,
  opsRate: [], // recent operations/s samples for the sparkline
  notice: null, // message shown on the login screen (e.g. after a 401)
  nextRoute: 'cluster', // where to go after login
};
const ui = {}; // nodes repainted by the pollers
let viewTimer = null;

// ---------------------------------------------------------------- helpers

/** Creates an element. `testid` becomes data-testid, `on*` become listeners. */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'testid') el.dataset.testid = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const fmtInt = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–');

function fmtDuration(secs) {
  if (!Number.isFinite(secs)) return '–';
  const d = Math.floor(secs / 86400), hh = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60), s = Math.floor(secs % 60);
  if (d) return `${d}d ${hh}h ${m}m`;
  if (hh) return `${hh}h ${m}m ${s}s`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function fmtValue(v) {
  if (v === undefined) return 'unavailable';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  return String(v);
}

// ---------------------------------------------------------------- API

const getToken = () => localStorage.getItem(TOKEN_KEY);

class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

/** JSON request. With `auth`, sends the Bearer token and turns a 401 into a logout. */
async function request(method, path, { body, auth = true } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const token = getToken();
  if (auth && token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, 'Server unreachable');
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (auth && res.status === 401) {
    logout('Your session has expired. Please sign in again.');
    throw new ApiError(401, 'unauthorized');
  }
  if (!res.ok) {
    const message = (data && (data.message || data.error)) || text || `HTTP ${res.status}`;
    throw new ApiError(res.status, message, data && data.field);
  }
  return data;
}

/** Parses Prometheus text exposition into [{name, labels, value}]. */
function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const [, k, v] of (m[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

const sumMetric = (samples, name, pred = () => true) =>
  samples.filter((s) => s.name === name && pred(s.labels)).reduce((acc, s) => acc + s.value, 0);

// ---------------------------------------------------------------- pollers

async function pollStatus() {
  try {
    state.status = await request('GET', '/api/status', { auth: false });
    state.statusError = null;
  } catch (e) {
    state.statusError = e.message;
  }
  paintStatus();
}

async function pollMetrics() {
  if (!getToken()) return;
  try {
    const res = await fetch('/metrics');
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const samples = parseMetrics(await res.text());
    const snap = {
      at: performance.now(),
      connections: sumMetric(samples, 'topgun_active_connections'),
      operations: sumMetric(samples, 'topgun_operations_total'),
      opErrors: sumMetric(samples, 'topgun_operations_total', (l) => l.outcome === 'error'),
      messagesIn: sumMetric(samples, 'topgun_messages_in_total'),
    };
    const prev = state.metrics;
    if (prev) {
      const secs = (snap.at - prev.at) / 1000;
      snap.opsPerSec = secs > 0 ? Math.max(0, snap.operations - prev.operations) / secs : 0;
      snap.msgsPerSec = secs > 0 ? Math.max(0, snap.messagesIn - prev.messagesIn) / secs : 0;
      state.opsRate = [...state.opsRate, snap.opsPerSec].slice(-SPARK_POINTS);
    }
    state.metrics = snap;
    state.metricsError = null;
  } catch (e) {
    state.metricsError = `metrics unavailable: ${e.message}`;
  }
  paintMetrics();
}

/** Runs `load` now and every VIEW_POLL_MS until the route changes. */
function pollView(load, errorBox) {
  const run = async () => {
    try {
      await load();
      errorBox.replaceChildren();
    } catch (e) {
      if (e.status !== 401) errorBox.replaceChildren(h('div', { class: 'alert error' }, e.message));
    }
  };
  run();
  viewTimer = setInterval(run, VIEW_POLL_MS);
}

// ---------------------------------------------------------------- shell

function paintStatus() {
  if (ui.banner) {
    ui.banner.hidden = !state.statusError;
    ui.banner.textContent = state.statusError ? `Server unavailable (${state.statusError}). Retrying…` : '';
  }
  if (!ui.status) return;
  const s = state.status;
  if (state.statusError || !s) {
    ui.status.replaceChildren(h('span', { class: 'dot down' }), state.statusError ? 'offline' : 'connecting…');
    return;
  }
  ui.status.replaceChildren(
    h('span', { class: 'dot up' }),
    h('span', { testid: 'status-node' }, s.nodeId || 'server'),
    h('span', { class: 'sep' }, `v${s.version}`),
    h('span', { class: 'sep', testid: 'status-mode' }, s.mode),
    h('span', { class: 'sep', testid: 'status-connections' }, `${fmtInt(s.connections)} conn`),
    h('span', { class: 'sep', testid: 'status-uptime' }, `up ${fmtDuration(s.uptimeSeconds)}`),
    h('span', { class: 'sep', testid: 'status-operations' }, `${fmtInt(s.totalOperations)} ops`),
  );
}

function sparkline(values) {
  const w = 120, hgt = 28;
  const max = Math.max(1, ...values);
  const step = w / (SPARK_POINTS - 1);
  const offset = (SPARK_POINTS - values.length) * step;
  const points = values.map((v, i) => `${(offset + i * step).toFixed(1)},${(hgt - 2 - (v / max) * (hgt - 4)).toFixed(1)}`);
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${hgt}`);
  svg.setAttribute('class', 'spark');
  if (points.length > 1) {
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    line.setAttribute('points', points.join(' '));
    svg.append(line);
  }
  return svg;
}

function metricCard(testid, label, value, sub, extra) {
  return h('div', { class: 'card metric' },
    h('div', { class: 'label' }, label),
    h('div', { class: 'value', testid }, value),
    h('div', { class: 'sub' }, sub),
    extra);
}

function paintMetrics() {
  if (!ui.metrics) return;
  const m = state.metrics;
  const rate = (v) => (v === undefined ? 'measuring rate…' : `${v.toFixed(1)}/s`);
  ui.metrics.replaceChildren(
    metricCard('metric-connections', 'Active connections', m ? fmtInt(m.connections) : '–', 'WebSocket clients'),
    metricCard('metric-operations', 'Operations', m ? fmtInt(m.operations) : '–',
      m ? `${rate(m.opsPerSec)} · ${fmtInt(m.opErrors)} errors` : 'waiting…', sparkline(state.opsRate)),
    metricCard('metric-messages-in', 'Messages in', m ? fmtInt(m.messagesIn) : '–', m ? rate(m.msgsPerSec) : 'waiting…'),
  );
  if (state.metricsError) ui.metrics.append(h('div', { class: 'alert error' }, state.metricsError));
}

function renderShell(route, loggedIn) {
  const link = (r, label) => h('a', { href: `#/${r}`, testid: `nav-${r}`, class: r === route ? 'active' : null }, label);
  ui.status = h('div', { class: 'status', testid: 'server-status' });
  ui.banner = h('div', { class: 'banner', testid: 'server-unavailable', hidden: true });
  const header = h('header', {},
    h('div', { class: 'brand' }, h('span', { class: 'logo' }, 'TG'), 'TopGun Admin'),
    loggedIn && h('nav', {}, link('cluster', 'Cluster'), link('maps', 'Maps'), link('settings', 'Settings')),
    ui.status,
    loggedIn && h('button', { class: 'ghost', testid: 'logout', onclick: () => logout(null) }, 'Sign out'));
  const main = h('main', {});
  app.replaceChildren(header, ui.banner, main);
  ui.metrics = null;
  paintStatus();
  return main;
}

// ---------------------------------------------------------------- views

function loginView(main) {
  const error = h('div', { class: 'alert error', testid: 'login-error', hidden: true });
  const user = h('input', { name: 'username', autocomplete: 'username', value: 'admin', required: true, testid: 'login-username' });
  const pass = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true, testid: 'login-password' });
  const submit = h('button', { type: 'submit', testid: 'login-submit' }, 'Sign in');
  const onsubmit = async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    error.hidden = true;
    try {
      const { token } = await request('POST', '/api/auth/login', {
        auth: false, body: { username: user.value, password: pass.value },
      });
      if (!token) throw new Error('Login failed');
      localStorage.setItem(TOKEN_KEY, token);
      state.notice = null;
      pollMetrics();
      go(state.nextRoute || 'cluster');
    } catch (e) {
      error.textContent = e.message || 'Login failed';
      error.hidden = false;
      submit.disabled = false;
    }
  };
  main.append(h('form', { class: 'card login', testid: 'login-form', onsubmit },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'Administrator credentials of this TopGun server.'),
    state.notice && h('div', { class: 'alert info', testid: 'login-notice' }, state.notice),
    h('label', {}, 'Username', user),
    h('label', {}, 'Password', pass),
    error,
    submit));
  pass.focus();
}

function statCard(label, value, testid) {
  return h('div', { class: 'card stat' }, h('div', { class: 'label' }, label), h('div', { class: 'value', testid }, value));
}

function clusterView(main) {
  const errors = h('div', {});
  const body = h('div', { testid: 'cluster-view' }, h('p', { class: 'muted' }, 'Loading…'));
  main.append(h('h2', {}, 'Cluster status'), errors, body);
  pollView(async () => {
    const data = await request('GET', '/api/admin/cluster/status');
    const nodes = data.nodes || [];
    const partitions = data.partitions || [];
    const healthy = nodes.filter((n) => n.status === 'healthy').length;
    const owners = new Map();
    for (const p of partitions) owners.set(p.ownerNodeId, (owners.get(p.ownerNodeId) || 0) + 1);
    const total = data.totalPartitions || partitions.length;

    body.replaceChildren(
      h('div', { class: 'stats' },
        statCard('Nodes', fmtInt(nodes.length), 'cluster-node-count'),
        statCard('Healthy', `${healthy} / ${nodes.length}`, 'cluster-healthy'),
        statCard('Partitions', `${fmtInt(partitions.length)} / ${fmtInt(total)} owned`, 'cluster-partitions'),
        statCard('Rebalancing', data.isRebalancing ? 'yes' : 'no', 'cluster-rebalancing')),
      h('h3', {}, 'Nodes'),
      h('table', { testid: 'nodes-table' },
        h('thead', {}, h('tr', {}, ['Node', 'Role', 'Address', 'Status', 'Partitions', 'Connections', 'Uptime'].map((t) => h('th', {}, t)))),
        h('tbody', {}, nodes.map((n) => h('tr', { testid: 'node-row', 'data-node-id': n.nodeId, 'data-role': n.role },
          h('td', { class: 'mono' }, n.nodeId),
          h('td', {}, h('span', { class: `badge role-${n.role}` }, n.role || '–')),
          h('td', { class: 'mono' }, n.address),
          h('td', {}, h('span', { class: `badge status-${n.status}` }, n.status)),
          h('td', { class: 'num' }, fmtInt(n.partitionCount)),
          h('td', { class: 'num' }, fmtInt(n.connections)),
          h('td', { class: 'num' }, fmtDuration(n.uptime)))))),
      h('h3', {}, 'Partition ownership'),
      owners.size === 0
        ? h('p', { class: 'muted', testid: 'partition-owners-empty' }, 'No partition table (single node).')
        : h('table', { testid: 'partition-owners' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Owner'), h('th', {}, 'Partitions'), h('th', { class: 'wide' }, 'Share'))),
          h('tbody', {}, [...owners].sort((a, b) => b[1] - a[1]).map(([owner, count]) => {
            const pct = total ? (100 * count) / total : 0;
            return h('tr', { testid: 'owner-row', 'data-owner': owner },
              h('td', { class: 'mono' }, owner),
              h('td', { class: 'num', testid: 'owner-count' }, fmtInt(count)),
              h('td', {}, h('div', { class: 'bar' }, h('div', { style: `width:${pct.toFixed(1)}%` })), ` ${pct.toFixed(1)}%`));
          }))));
  }, errors);
}

const isHiddenMap = (name) => name.startsWith('__') || name.startsWith('$sys/') || name === '_empty';

function mapsView(main) {
  const errors = h('div', {});
  const body = h('div', { testid: 'maps-view' }, h('p', { class: 'muted' }, 'Loading…'));
  main.append(h('h2', {}, 'Maps'), errors, body);
  pollView(async () => {
    const data = await request('GET', '/api/admin/maps');
    const maps = (data.maps || []).filter((m) => !isHiddenMap(m.name)).sort((a, b) => a.name.localeCompare(b.name));
    if (maps.length === 0) {
      body.replaceChildren(h('p', { class: 'muted', testid: 'maps-empty' }, 'No maps yet — a map appears after its first write.'));
      return;
    }
    const entries = maps.reduce((acc, m) => acc + (m.entryCount || 0), 0);
    body.replaceChildren(
      h('table', { testid: 'maps-table' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Kind'), h('th', { class: 'num' }, 'Entries'), h('th', { class: 'num' }, 'Partitions'))),
        h('tbody', {}, maps.map((m) => h('tr', { testid: 'map-row', 'data-map-name': m.name },
          h('td', { class: 'mono', testid: 'map-name' }, m.name),
          h('td', {}, h('span', { class: `badge kind-${m.kind}` }, m.kind === 'or' ? 'OR-Map' : 'LWW-Map')),
          h('td', { class: 'num', testid: 'map-entries' }, fmtInt(m.entryCount)),
          h('td', { class: 'num' }, m.partitions == null ? '–' : fmtInt(m.partitions)))))),
      h('p', { class: 'muted', testid: 'maps-summary' }, `${maps.length} map${maps.length === 1 ? '' : 's'}, ${fmtInt(entries)} entries`));
  }, errors);
}

function settingsView(main) {
  let settings = null;
  const inputs = {};
  const values = {};
  const message = h('div', { class: 'alert ok', testid: 'settings-message', hidden: true });
  const error = h('div', { class: 'alert error', testid: 'settings-error', hidden: true });
  const rows = h('tbody', {});
  const save = h('button', { type: 'submit', testid: 'settings-save' }, 'Save changes');
  const show = (el, text) => { el.textContent = text; el.hidden = !text; };

  const paint = () => {
    rows.replaceChildren(...SETTINGS.filter((s) => s.edit || s.key in settings).map((s) => {
      values[s.key] = h('td', { class: 'mono', testid: `setting-value-${s.key}` }, fmtValue(settings[s.key]));
      let editor = h('span', { class: 'muted' }, 'read-only');
      if (s.edit && s.key in settings) {
        inputs[s.key] = h('input', {
          name: s.key, testid: `setting-input-${s.key}`, value: settings[s.key], placeholder: s.hint,
          inputmode: s.edit === 'int' ? 'numeric' : null,
          oninput: (ev) => ev.target.classList.toggle('dirty', ev.target.value !== String(settings[s.key])),
        });
        editor = h('div', {}, inputs[s.key], h('div', { class: 'hint' }, s.hint));
      } else if (s.edit) {
        editor = h('span', { class: 'muted' }, 'not available on this server');
      }
      return h('tr', { testid: `setting-${s.key}` }, h('th', {}, s.label, h('div', { class: 'hint mono' }, s.key)), values[s.key], h('td', {}, editor));
    }));
  };

  const load = async () => {
    show(error, '');
    try {
      settings = await request('GET', '/api/admin/settings');
      paint();
    } catch (e) {
      if (e.status !== 401) show(error, e.message);
    }
  };

  /** Only the keys whose input differs from the loaded value. */
  const changes = () => {
    const patch = {};
    for (const [key, input] of Object.entries(inputs)) {
      const spec = SETTINGS.find((s) => s.key === key);
      const raw = input.value.trim();
      if (raw === String(settings[key])) continue;
      if (spec.edit === 'int') {
        if (!/^\d+$/.test(raw)) throw new ApiError(0, `${spec.label} must be a whole number`, key);
        patch[key] = Number(raw);
      } else {
        patch[key] = raw;
      }
    }
    return patch;
  };

  const onsubmit = async (ev) => {
    ev.preventDefault();
    show(message, '');
    show(error, '');
    for (const input of Object.values(inputs)) input.classList.remove('invalid');
    save.disabled = true;
    try {
      const patch = changes();
      const keys = Object.keys(patch);
      if (keys.length === 0) {
        show(message, 'Nothing to save: no setting was changed.');
        return;
      }
      settings = await request('PUT', '/api/admin/settings', { body: patch });
      paint();
      show(message, `Saved ${keys.join(', ')}.`);
    } catch (e) {
      if (e.status === 401) return;
      show(error, e.message);
      if (e.field && inputs[e.field]) inputs[e.field].classList.add('invalid');
    } finally {
      save.disabled = false;
    }
  };

  main.append(
    h('h2', {}, 'Settings'),
    h('form', { class: 'card', testid: 'settings-form', onsubmit },
      h('table', { class: 'settings', testid: 'settings-table' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Setting'), h('th', {}, 'Current value'), h('th', {}, 'Change'))),
        rows),
      message, error,
      h('div', { class: 'actions' },
        save,
        h('button', { type: 'button', class: 'ghost', testid: 'settings-reset', onclick: () => { show(message, ''); show(error, ''); paint(); } }, 'Reset'),
        h('button', { type: 'button', class: 'ghost', testid: 'settings-reload', onclick: load }, 'Reload'))));
  load();
}

const VIEWS = { cluster: clusterView, maps: mapsView, settings: settingsView };

// ---------------------------------------------------------------- routing

const app = document.getElementById('app');
const currentRoute = () => location.hash.replace(/^#\/?/, '').split(/[/?]/)[0] || 'cluster';

function go(route) {
  if (location.hash === `#/${route}`) render();
  else location.hash = `#/${route}`;
}

function logout(notice) {
  localStorage.removeItem(TOKEN_KEY);
  state.notice = notice;
  state.metrics = null;
  state.opsRate = [];
  go('login');
}

function render() {
  clearInterval(viewTimer);
  viewTimer = null;
  const route = currentRoute();
  if (!getToken()) {
    if (route !== 'login') {
      state.nextRoute = route;
      go('login');
      return;
    }
    loginView(renderShell('login', false));
    return;
  }
  if (route === 'login' || !VIEWS[route]) {
    go('cluster');
    return;
  }
  const main = renderShell(route, true);
  ui.metrics = h('section', { class: 'metrics', testid: 'metrics' });
  const view = h('section', { class: 'view' });
  main.append(ui.metrics, view);
  paintMetrics();
  VIEWS[route](view);
}

window.addEventListener('hashchange', render);
render();
pollStatus();
pollMetrics();
setInterval(pollStatus, STATUS_POLL_MS);
setInterval(pollMetrics, METRICS_POLL_MS);
