"""A one-page view of the cluster, served by every replica.

The page itself holds no data and needs no token; it asks for the token once (kept in the
browser's localStorage) and reads the same API as the CLI.
"""

from __future__ import annotations

from aiohttp import web

from .openapi import Operation, documented

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>hacontrol</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:.2em .8em;text-align:left;
border-bottom:1px solid #ddd}th{background:#f4f4f4}.leader{font-weight:bold}
.running,.ready{color:#070}.failed,.lost,.down{color:#b00}.pending{color:#a60}
#err{color:#b00}
</style></head><body>
<h1>hacontrol</h1>
<div id="login" hidden><input id="tok" type="password" placeholder="management token">
<button onclick="saveToken()">Connect</button></div>
<div id="err"></div>
<h2>Replicas</h2><table id="replicas"></table>
<h2>Nodes</h2><table id="nodes"></table>
<h2>Jobs</h2><table id="jobs"></table>
<h2>Allocations</h2><table id="allocs"></table>
<script>
function saveToken(){localStorage.setItem('hacontrol-token',
  document.getElementById('tok').value);refresh();}
function esc(s){return String(s??'').replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;',
  '>':'&gt;','"':'&quot;'}[c]));}
function table(id,cols,rows,cls){const t=document.getElementById(id);
  t.innerHTML='<tr>'+cols.map(c=>'<th>'+esc(c[0])+'</th>').join('')+'</tr>'+
  rows.map(r=>'<tr class="'+esc(cls?cls(r):'')+'">'+cols.map(c=>'<td class="'+
  esc(c[1](r))+'">'+esc(c[1](r))+'</td>').join('')+'</tr>').join('');}
async function get(path){const r=await fetch(path,{headers:{Authorization:'Bearer '+
  localStorage.getItem('hacontrol-token')}});
  if(r.status==401||r.status==403){document.getElementById('login').hidden=false;
  throw new Error('token needed');}return r.json();}
async function refresh(){try{
  const st=await get('/v1/status?stale=true');
  const reps=await Promise.all(st.members.map(async m=>{try{const r=await fetch(m.api+
    '/v1/health/ready');const b=await r.json();return {...m,...b};}catch(e){
    return {...m,role:'unreachable'};}}));
  table('replicas',[['id',r=>r.id],['role',r=>r.role],['api',r=>r.api],
    ['applied',r=>r.applied_index]],reps,r=>r.id==st.leader?'leader':'');
  const n=await get('/v1/nodes?stale=true');
  table('nodes',[['name',r=>r.name],['status',r=>r.status],['cpu free',r=>r.free.cpu+
    ' / '+r.capacity.cpu],['memory free',r=>r.free.memory_mb+' / '+r.capacity.memory_mb],
    ['allocations',r=>r.allocations]],n.nodes);
  const j=await get('/v1/jobs?stale=true');
  table('jobs',[['namespace',r=>r.namespace],['name',r=>r.name],['version',r=>r.version],
    ['count',r=>r.count],['running',r=>r.counts.running],['pending',r=>r.counts.pending],
    ['failed',r=>r.counts.failed]],j.jobs);
  const a=await get('/v1/allocations?stale=true');
  table('allocs',[['id',r=>r.id],['job',r=>r.namespace+'/'+r.job],['node',r=>r.node],
    ['state',r=>r.state],['pid',r=>r.pid],['restarts',r=>r.restarts],
    ['exit',r=>r.signal||r.exit_code]],a.allocations);
  document.getElementById('err').textContent='';
}catch(e){document.getElementById('err').textContent=e.message;}}
refresh();setInterval(refresh,2000);
</script></body></html>
"""


@documented(Operation("The cluster page (HTML; it asks for a token itself)", "ui",
                      media="text/html", public=True, errors=()))
async def page(_: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


def register(app: web.Application) -> None:
    app.router.add_get("/", page)
    app.router.add_get("/ui", page)
