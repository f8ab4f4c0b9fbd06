/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The dashboard page: renders each snapshot the server pushes over server-sent events. The browser's
 * EventSource reconnects by itself; every connection starts with a whole snapshot, so the page
 * resyncs after a restart, a network cut or a compaction without any state of its own to repair.
 * No framework: one module, compiled by tsc into the package.
 */

interface Owner {
  instance: string;
  token: number;
  since: number | string;
  moving: boolean;
}
interface Service {
  name: string;
  partitions: string[];
  owners: Record<string, Owner>;
  instances: {
    id: string;
    address: string | null;
    state: string;
    health: string;
    weight: number;
    restarts: number | null;
    startedAt: string;
  }[];
  pins: Record<string, string>;
  routes: Record<string, string>;
  proxies: { id: string; total: number; held: Record<string, number> }[];
  held: Record<string, number>;
}
interface Version {
  version: number;
  activateAt: number;
  createdAt: number;
  cancelledAt?: number;
  author?: string;
  note?: string;
  value: unknown;
  holders: string[];
  missing: string[];
}
interface Config {
  name: string;
  versions: Version[];
  instances: { instance: string; version: number; state: string; verifiedAt?: number }[];
}
interface Snapshot {
  now: number;
  seq: number;
  services: Service[];
  configs: Config[];
  writable: boolean;
}

const $ = (id: string): HTMLElement => document.getElementById(id) as HTMLElement;
const esc = (s: unknown): string => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

let snap: Snapshot | undefined;
let offset = 0; // server clock − page clock
let lastOwners = new Map<string, string>();
let currentKey = '';
const serverNow = (): number => Date.now() + offset;

/** A stable colour per instance id (golden-angle hues: neighbours differ). */
const colours = new Map<string, string>();
function colour(id: string): string {
  let c = colours.get(id);
  if (c === undefined) {
    let h = 0;
    for (const ch of id) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
    c = `hsl(${(h * 137.508) % 360} 62% 62%)`;
    colours.set(id, c);
  }
  return c;
}

function fmtDuration(ms: number): string {
  if (ms <= 0) return 'now';
  const s = Math.ceil(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

function inForce(c: Config, t: number): number | undefined {
  let best: Version | undefined;
  for (const v of c.versions)
    if (
      v.cancelledAt === undefined &&
      v.activateAt <= t &&
      (best === undefined || v.activateAt >= best.activateAt)
    )
      best = v;
  return best?.version;
}

function renderService(s: Service): string {
  const cells = s.partitions
    .map((p) => {
      const o = s.owners[p];
      const key = `${s.name}/${p}`;
      const changed = o !== undefined && lastOwners.has(key) && lastOwners.get(key) !== o.instance;
      const cls = [
        'cell',
        o === undefined ? 'none' : '',
        o?.moving === true ? 'moving' : '',
        s.pins[p] !== undefined ? 'pinned' : '',
        changed ? 'changed' : '',
      ]
        .filter(Boolean)
        .join(' ');
      const title =
        o === undefined
          ? `partition ${p}: no owner`
          : `partition ${p} → ${o.instance} (token ${o.token})${o.moving ? ', moving' : ''}${s.pins[p] !== undefined ? `, pinned to ${s.pins[p]}` : ''}`;
      return `<div class="${cls}" data-cell="${esc(key)}" data-owner="${esc(o?.instance ?? '')}" data-service="${esc(s.name)}" data-partition="${esc(p)}" title="${esc(title)}" style="${o === undefined ? '' : `background:${colour(o.instance)}`}">${esc(p)}</div>`;
    })
    .join('');
  const counts = new Map<string, number>();
  for (const o of Object.values(s.owners)) counts.set(o.instance, (counts.get(o.instance) ?? 0) + 1);
  const legend =
    s.instances
      .map(
        (i) =>
          `<span><i style="background:${colour(i.id)}"></i>${esc(i.id)} · ${counts.get(i.id) ?? 0}</span>`,
      )
      .join('') + '<span>● pinned</span><span>dashed outline: moving</span>';
  const rows = s.instances
    .map(
      (
        i,
      ) => `<tr data-instance="${esc(i.id)}"><td class="mono"><i style="display:inline-block;width:8px;height:8px;border-radius:2px;background:${colour(i.id)}"></i> ${esc(i.id)}</td>
<td class="mono">${esc(i.address ?? '—')}</td><td><span class="badge ${esc(i.state)}">${esc(i.state)}</span></td>
<td><span class="badge ${esc(i.health)}">${esc(i.health)}</span></td><td>${esc(i.weight)}</td><td>${i.restarts === null ? '—' : esc(i.restarts)}</td></tr>`,
    )
    .join('');
  const pins = Object.entries(s.pins);
  const routes = Object.entries(s.routes);
  const kv = (list: [string, string][], empty: string, head: string): string =>
    list.length === 0
      ? `<div class="empty">${empty}</div>`
      : `<table><tr><th>${head}</th><th>instance</th></tr>${list.map(([k, v]) => `<tr><td class="mono">${esc(k)}</td><td class="mono">${esc(v)}</td></tr>`).join('')}</table>`;
  const owned = Object.keys(s.owners).length;
  return `<section data-service-section="${esc(s.name)}"><h2>${esc(s.name)} <small>${owned}/${s.partitions.length} partitions owned · ${s.instances.length} instances</small></h2>
<div class="cols"><div><h3>Partition map</h3><div class="grid">${cells || '<div class="empty">no partitions</div>'}</div><div class="legend">${legend}</div></div>
<div><h3>Instances</h3>${s.instances.length === 0 ? '<div class="empty">none</div>' : `<table><tr><th>instance</th><th>address</th><th>state</th><th>health</th><th>weight</th><th>restarts</th></tr>${rows}</table>`}
<h3>Pins</h3>${kv(pins, 'no pinned partitions', 'partition')}<h3>Proxy routes</h3>${kv(routes, 'no pinned routing keys', 'key')}
<h3>Held requests</h3>${renderHeld(s)}</div></div></section>`;
}

/** Held queues per destination (summed over the proxies), and each proxy's total. */
function renderHeld(s: Service): string {
  const proxies = s.proxies ?? [];
  if (proxies.length === 0) return '<div class="empty">no proxy publishes for this service</div>';
  const queues = Object.entries(s.held ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const list =
    queues.length === 0
      ? '<div class="empty" data-held-total="0">nothing held</div>'
      : `<table data-held-total="${queues.reduce((a, [, n]) => a + n, 0)}"><tr><th>destination</th><th>held</th></tr>${queues.map(([d, n]) => `<tr data-held="${esc(d)}"><td class="mono">${esc(d)}</td><td>${esc(n)}</td></tr>`).join('')}</table>`;
  return `${list}<div class="legend">${proxies.map((p) => `<span class="mono">${esc(p.id)} · ${esc(p.total)}</span>`).join('')}</div>`;
}

function renderConfig(c: Config, now: number): string {
  const cur = inForce(c, now);
  const live = c.instances.length;
  const rows = [...c.versions]
    .reverse()
    .map((v) => {
      const state =
        v.cancelledAt !== undefined
          ? 'cancelled'
          : v.version === cur
            ? 'current'
            : v.activateAt > now
              ? 'scheduled'
              : 'past';
      const when =
        state === 'scheduled'
          ? `<span class="countdown" data-countdown="${v.activateAt}">in ${fmtDuration(v.activateAt - now)}</span>`
          : `<span class="mono">${new Date(v.activateAt).toISOString().replace('T', ' ').slice(0, 19)}</span>`;
      const held = v.holders.length;
      const pct = live === 0 ? 0 : Math.round((held / live) * 100);
      const cancel =
        state === 'scheduled'
          ? `<button data-action="cancel" data-config="${esc(c.name)}" data-v="${v.version}">cancel</button>`
          : '';
      return `<tr data-version="${esc(c.name)}/${v.version}" data-state="${state}"><td class="mono">v${v.version}</td>
<td><span class="badge ${state}">${state}</span></td><td>${when}</td>
<td><div style="display:flex;gap:8px;align-items:center"><div class="bar"><span style="width:${pct}%"></span></div><span data-held>${held}/${live}</span></div>${v.missing.length > 0 && state !== 'cancelled' ? `<div class="missing">not yet: ${esc(v.missing.slice(0, 6).join(', '))}${v.missing.length > 6 ? ` +${v.missing.length - 6}` : ''}</div>` : ''}</td>
<td class="mono">${esc(JSON.stringify(v.value)).slice(0, 60)}</td><td>${esc(v.note ?? '')}</td><td>${cancel}</td></tr>`;
    })
    .join('');
  const next = c.versions
    .filter((v) => v.cancelledAt === undefined && v.activateAt > now)
    .sort((a, b) => a.activateAt - b.activateAt)[0];
  return `<section data-config-section="${esc(c.name)}"><h2>config · ${esc(c.name)} <small>in force: ${cur === undefined ? 'none' : `v${cur}`} · ${live} live holder${live === 1 ? '' : 's'}${next === undefined ? '' : ` · next: v${next.version} <span class="countdown" data-countdown="${next.activateAt}">in ${fmtDuration(next.activateAt - now)}</span>`}</small></h2>
<table><tr><th>version</th><th>state</th><th>activates</th><th>held by live instances</th><th>value</th><th>note</th><th></th></tr>${rows || '<tr><td colspan="7" class="empty">no versions</td></tr>'}</table></section>`;
}

function render(): void {
  if (snap === undefined) return;
  const now = serverNow();
  currentKey = snap.configs.map((c) => `${c.name}:${inForce(c, now) ?? ''}`).join(',');
  const parts = [...snap.services.map(renderService), ...snap.configs.map((c) => renderConfig(c, now))];
  $('root').innerHTML =
    parts.join('') ||
    '<section class="empty">The store holds no services and no configurations yet.</section>';
  lastOwners = new Map(
    snap.services.flatMap((s) => Object.entries(s.owners).map(([p, o]) => [`${s.name}/${p}`, o.instance])),
  );
  const parts2 = snap.services.reduce((n, s) => n + s.partitions.length, 0);
  $('summary').textContent =
    `${snap.services.length} services · ${parts2} partitions · ${snap.configs.length} configurations · ${snap.writable ? 'writes allowed with token' : 'read-only'}`;
}

/** Countdowns tick locally (corrected by the server clock); at an activation the timeline re-renders. */
function tick(): void {
  if (snap === undefined) return;
  const now = serverNow();
  const key = snap.configs.map((c) => `${c.name}:${inForce(c, now) ?? ''}`).join(',');
  if (key !== currentKey) {
    render();
    return;
  }
  for (const el of document.querySelectorAll<HTMLElement>('[data-countdown]'))
    el.textContent = `in ${fmtDuration(Number(el.dataset['countdown']) - now)}`;
}

function toast(text: string, ok = false): void {
  const t = $('toast');
  t.className = ok ? 'ok' : '';
  t.innerHTML = text;
  t.style.display = 'block';
  setTimeout(() => (t.style.display = 'none'), 6000);
}

async function write(path: string, body: unknown, what: string): Promise<void> {
  if (!confirm(`${what}?`)) return;
  const token = ($('token') as HTMLInputElement).value.trim();
  const res = await fetch(path, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token === '' ? {} : { authorization: `Bearer ${token}` }),
    },
    body: JSON.stringify(body),
  });
  const json = (await res.json()) as { error?: { code: string; message: string } };
  if (json.error !== undefined)
    toast(`<code data-error-code>${esc(json.error.code)}</code>: ${esc(json.error.message)}`);
  else toast(`done: ${esc(what)}`, true);
}

function openPanel(cell: HTMLElement): void {
  const s = snap?.services.find((x) => x.name === cell.dataset['service']);
  if (s === undefined) return;
  const p = cell.dataset['partition'] ?? '';
  const panel = $('panel');
  const options = s.instances.map((i) => `<option>${esc(i.id)}</option>`).join('');
  panel.innerHTML = `<div style="margin-bottom:6px"><b>${esc(s.name)} / ${esc(p)}</b> · owner ${esc(cell.dataset['owner'] || 'none')}</div>
<div>pin to <select id="pin-to">${options}</select> <button id="do-pin">pin</button>${s.pins[p] !== undefined ? ' <button id="do-unpin">unpin</button>' : ''}</div>`;
  const r = cell.getBoundingClientRect();
  panel.style.left = `${Math.min(r.left, window.innerWidth - 300)}px`;
  panel.style.top = `${r.bottom + 6}px`;
  panel.style.display = 'block';
  $('do-pin').onclick = () => {
    const instance = ($('pin-to') as HTMLSelectElement).value;
    panel.style.display = 'none';
    void write(
      '/v1/ui/pin',
      { service: s.name, partition: p, instance },
      `pin ${s.name}/${p} to ${instance} (drains it away from ${cell.dataset['owner'] || 'nobody'})`,
    );
  };
  const un = document.getElementById('do-unpin');
  if (un !== null)
    un.onclick = () => {
      panel.style.display = 'none';
      void write('/v1/ui/unpin', { service: s.name, partition: p }, `unpin ${s.name}/${p}`);
    };
}

document.addEventListener('click', (e) => {
  const target = e.target as HTMLElement;
  const cell = target.closest<HTMLElement>('[data-cell]');
  if (cell !== null) return openPanel(cell);
  if (target.closest('#panel') === null) $('panel').style.display = 'none';
  if (target.dataset['action'] === 'cancel') {
    const config = target.dataset['config'] ?? '';
    const version = Number(target.dataset['v']);
    void write('/v1/ui/cancel', { config, version }, `cancel ${config} v${version}`);
  }
});

const tokenInput = $('token') as HTMLInputElement;
tokenInput.value = sessionStorage.getItem('muster-token') ?? '';
tokenInput.addEventListener('change', () => sessionStorage.setItem('muster-token', tokenInput.value));

function connect(): void {
  const es = new EventSource('/v1/ui/events');
  es.addEventListener('open', () => {
    $('conn').textContent = 'live';
    $('conn').className = 'live';
  });
  es.addEventListener('snapshot', (e) => {
    snap = JSON.parse((e as MessageEvent<string>).data) as Snapshot;
    offset = snap.now - Date.now();
    render();
    document.body.dataset['seq'] = String(snap.seq);
  });
  es.addEventListener('error', () => {
    $('conn').textContent = 'reconnecting…';
    $('conn').className = 'down';
  });
}
connect();
setInterval(tick, 250);
