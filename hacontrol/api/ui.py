"""A one-page view of the cluster, served by every replica.

The page itself holds no data and needs no token; it asks for the token once (kept in the
browser's localStorage) and reads the same API as the CLI.
"""

from __future__ import annotations

import base64
import hashlib
import re

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
<button id="connect">Connect</button></div>
<div id="err"></div>
<h2>Replicas</h2><table id="replicas"></table>
<h2>Nodes</h2><table id="nodes"></table>
<h2>Jobs</h2><table id="jobs"></table>
<h2>Allocations</h2><table id="allocs"></table>
<script>
document.getElementById('connect').addEventListener('click',()=>saveToken());
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
  // Only this replica is asked (the page may not read other origins): it knows the leader.
  const reps=st.members.map(m=>({...m,role:m.id==st.leader?'leader':(m.id==st.id?st.role:
    'follower'),applied_index:m.id==st.id?st.applied_index:null}));
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


def _sha256_sources(tag: str) -> str:
    bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", PAGE, re.S)
    return " ".join("'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()
                    + "'" for b in bodies)


# Only the page's own inline script and style run (by hash, so an injected one does not),
# it talks only to its own origin, and no other site may frame it.
CSP = (f"default-src 'none'; script-src {_sha256_sources('script')}; "
       f"style-src {_sha256_sources('style')}; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


@documented(Operation("The cluster page (HTML; it asks for a token itself)", "ui",
                      media="text/html", public=True, errors=()))
async def page(_: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", headers=HEADERS)


def register(app: web.Application) -> None:
    app.router.add_get("/", page)
    app.router.add_get("/ui", page)
