/** The dashboard's one HTML page: markup and styles inline, the script from `/ui/app.js` (same origin). */
export const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>muster</title>
<style>
:root { --bg:#0f1419; --panel:#171d24; --line:#26303b; --text:#d6dde4; --dim:#8a97a5; --ok:#3fb950; --warn:#d29922; --bad:#f85149; --accent:#58a6ff; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--text); font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { display:flex; align-items:center; gap:16px; padding:10px 20px; background:var(--panel); border-bottom:1px solid var(--line); position:sticky; top:0; z-index:2; }
header h1 { font-size:16px; margin:0; letter-spacing:.5px; }
header .sub { color:var(--dim); font-size:12px; }
#conn { margin-left:auto; font-size:12px; padding:2px 10px; border-radius:10px; background:#30363d; }
#conn.live { background:rgba(63,185,80,.15); color:var(--ok); }
#conn.down { background:rgba(248,81,73,.15); color:var(--bad); }
#token { background:var(--bg); color:var(--text); border:1px solid var(--line); border-radius:6px; padding:4px 8px; width:170px; font-size:12px; }
main { padding:16px 20px; display:grid; gap:16px; grid-template-columns: minmax(0,1fr); }
section { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:14px 16px; }
section h2 { margin:0 0 10px; font-size:15px; display:flex; gap:10px; align-items:baseline; }
section h2 small { color:var(--dim); font-weight:normal; font-size:12px; }
h3 { font-size:12px; text-transform:uppercase; letter-spacing:.8px; color:var(--dim); margin:14px 0 6px; }
.cols { display:grid; grid-template-columns: minmax(0,3fr) minmax(0,2fr); gap:20px; }
.grid { display:grid; grid-template-columns: repeat(auto-fill, minmax(38px, 1fr)); gap:4px; }
.cell { height:34px; border-radius:4px; display:flex; align-items:center; justify-content:center; font:11px ui-monospace, monospace; color:#0b0f14; cursor:pointer; position:relative; transition: background-color .3s; }
.cell.none { background:#2d333b; color:var(--dim); }
.cell.moving { outline:2px dashed #fff; outline-offset:-3px; }
.cell.pinned::after { content:""; position:absolute; top:3px; right:3px; width:7px; height:7px; border-radius:50%; background:#0b0f14; box-shadow:0 0 0 1.5px #fff; }
.cell.changed { animation: flash 1.2s ease-out; }
@keyframes flash { 0% { box-shadow:0 0 0 3px #fff; transform:scale(1.15); } 100% { box-shadow:0 0 0 0 transparent; transform:scale(1); } }
.legend { display:flex; flex-wrap:wrap; gap:10px; margin-top:8px; font-size:12px; color:var(--dim); }
.legend i { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:5px; vertical-align:-1px; }
table { width:100%; border-collapse:collapse; font-size:13px; }
th { text-align:left; color:var(--dim); font-weight:500; font-size:11px; text-transform:uppercase; letter-spacing:.6px; border-bottom:1px solid var(--line); padding:4px 8px 4px 0; }
td { padding:5px 8px 5px 0; border-bottom:1px solid #1e252d; vertical-align:top; }
td.mono, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size:12px; }
.badge { display:inline-block; padding:0 8px; border-radius:9px; font-size:11px; font-weight:600; }
.passing, .active, .current { background:rgba(63,185,80,.15); color:var(--ok); }
.warning, .draining, .scheduled { background:rgba(210,153,34,.15); color:var(--warn); }
.failing, .cancelled { background:rgba(248,81,73,.15); color:var(--bad); }
.unknown, .past { background:#30363d; color:var(--dim); }
.countdown { font-variant-numeric: tabular-nums; font-weight:600; color:var(--warn); }
.bar { height:6px; background:#2d333b; border-radius:3px; overflow:hidden; min-width:80px; }
.bar > span { display:block; height:100%; background:var(--ok); }
.missing { color:var(--warn); font-size:12px; }
button { background:#21262d; color:var(--text); border:1px solid var(--line); border-radius:6px; padding:2px 10px; font-size:12px; cursor:pointer; }
button:hover { border-color:var(--accent); }
.empty { color:var(--dim); font-style:italic; }
#toast { position:fixed; bottom:20px; right:20px; max-width:520px; padding:10px 14px; border-radius:8px; background:#3d1d20; border:1px solid var(--bad); color:#ffd7d5; display:none; z-index:3; }
#toast.ok { background:#17301f; border-color:var(--ok); color:#cdeccf; }
#toast code { font-weight:700; }
#panel { position:fixed; z-index:4; background:var(--panel); border:1px solid var(--accent); border-radius:8px; padding:10px; display:none; box-shadow:0 8px 24px rgba(0,0,0,.5); font-size:12px; }
#panel select { background:var(--bg); color:var(--text); border:1px solid var(--line); border-radius:4px; }
</style>
</head>
<body>
<header>
  <h1>muster</h1><span class="sub" id="summary">connecting…</span>
  <input id="token" type="password" placeholder="write token (optional)" autocomplete="off">
  <span id="conn">connecting</span>
</header>
<main id="root"></main>
<div id="panel"></div>
<div id="toast"></div>
<script type="module" src="/ui/app.js"></script>
</body>
</html>
`;
