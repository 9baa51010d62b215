#!lua flags=
-- Apply a batch of compact events of one shard atomically (§4).
-- Per-chat state is a join-semilattice (earliest terminal time, then smallest queue
-- name), so applying an event twice, or events in any order, ends in the same counts.
--
-- KEYS[1] source stream, KEYS[2] dead-letter stream, KEYS[3] the shard's worker counters
-- ARGV: shard key prefix, start id ('-' or '(<id>'), count, chat ttl ms,
--       counts retention s, now (unix s), single ('1': fail instead of dead-letter), end id,
--       changes retention (hours), park ('1': events waiting for a group name are moved to
--       their integration's parking stream P..'pk:'<iid>, so that no later drain of the
--       shard reads them again; '0' when KEYS[1] is such a parking stream: they stay put),
--       the parked integration's id when KEYS[1] is its parking stream (else '')
-- Waiting (parked) integrations: set P..'pw'; the group ids they wait for: set P..'pg:'<iid>.
-- Pending events per integration (stored, not yet counted or dead-lettered): hash P..'pn',
-- incremented by the ingest script, decremented here.
-- A counted chat's state ends in one digit saying why it is in its queue (§7 explain):
-- 1 name in the event, 2 name learnt from another event, 3 name from Freshchat, 4 no group,
-- 5 deleted or spam, 6 group unknown to Freshchat, 7 group of the chat's latest assignment
-- (webhook path), 8 group from Freshchat's conversation lookup. Appended as a digit, the state stays
-- one integer (below 2^63: Redis keeps it in the key's object, no allocation).
-- Revisions (§6): every batch that changed counts takes the shard's next revision (hash
-- P..'rv', field '#'), and each changed 15-minute interval and queue is scored with it
-- once (zset P..'ch': "<iid>|<slot>:<qid>"); one revision and one ZADD per batch keep the
-- cost flat however many integrations a batch touches. The first revision of every
-- hour is kept (hash P..'ck') so that history older than the retention can be dropped,
-- raising the shard's floor (P..'rv' field '/f') below which `changes` says 410.
-- Kinds: 0 other, 1 solved, 2 deleted/spam, 3 solved naming no group (webhook path: the
-- group of the chat's latest assignment P..'a:'<iid>':'<chat>, else Freshchat's lookup),
-- 4 assigned (webhook path).
-- Returns {last id read, applied, {iid, gid, ...} needing a group name, {dead ids}, error}

local src, dead, stats = KEYS[1], KEYS[2], KEYS[3]
local P = ARGV[1]
local start, count = ARGV[2], tonumber(ARGV[3])
local chat_ttl, keep_s, now_s = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local single = ARGV[7] == '1'
local stop = ARGV[8] or '+'
local keep_hours = tonumber(ARGV[9] or '840')
local park = ARGV[10] == '1'

local UNDEF = 'Undefined_Queue'
local EPOCH = 1577836800000 -- 2020-01-01T00:00Z in ms
local QBITS = 4096          -- state = (t - EPOCH) * QBITS + qid: one integer, exact below 2^53
local SLOT = 900000         -- 15 minutes in ms

local floor = math.floor
local gcache, qcache, ncache = {}, {}, {}
local changed, changed_cells = {}, {} -- "<iid>|<slot>:<qid>" changed by this batch

local function group_of(iid, gid)
  local k = iid .. '\0' .. gid
  local v = gcache[k]
  if v == nil then
    v = redis.call('HGET', P .. 'g:' .. iid, gid) or false
    gcache[k] = v
  end
  return v
end

local function learn(iid, gid, name)
  if group_of(iid, gid) ~= name then
    redis.call('HSET', P .. 'g:' .. iid, gid, name)
    gcache[iid .. '\0' .. gid] = name
  end
end

local function qid_of(iid, name)
  if name == UNDEF then return 0 end
  local k = iid .. '\0' .. name
  local q = qcache[k]
  if q then return q end
  local h = P .. 'qi:' .. iid
  q = redis.call('HGET', h, '=' .. name)
  if not q then
    q = redis.call('HINCRBY', h, '#', 1)
    redis.call('HSET', h, '=' .. name, q, '#' .. q, name)
  end
  q = tonumber(q)
  qcache[k] = q
  return q
end

local function name_of(iid, q)
  if q == 0 then return UNDEF end
  local k = iid .. '\0' .. q
  local n = ncache[k]
  if not n then
    n = redis.call('HGET', P .. 'qi:' .. iid, '#' .. q) or ''
    ncache[k] = n
  end
  return n
end

local function encode(t, q, why)
  if q < QBITS then return string.format('%.0f', (t - EPOCH) * QBITS + q) .. why end
  return string.format('%.0f:%d', t, q) .. why
end

local function decode(v)
  v = string.sub(v, 1, -2) -- the why digit
  local t, q = string.match(v, '^(%d+):(%d+)$')
  if t then return tonumber(t), tonumber(q) end
  local n = tonumber(v)
  local qq = n % QBITS
  return (n - qq) / QBITS + EPOCH, qq
end

local function bump(iid, t, q, delta)
  local slot = floor(t / SLOT)
  local day = floor(slot / 96)
  local key = P .. 'n:' .. iid .. ':' .. string.format('%d', day)
  local field = string.format('%d:%d', slot - day * 96, q)
  if redis.call('HINCRBY', key, field, delta) <= 0 then
    redis.call('HDEL', key, field)
  end
  if delta > 0 then
    redis.call('EXPIREAT', key, (day + 1) * 86400 + keep_s)
  end
  redis.call('HINCRBY', P .. 'qs:' .. iid, q .. ':n', delta)
  local cell = string.format('%s|%d:%d', iid, slot, q)
  if not changed[cell] then
    changed[cell] = true
    changed_cells[#changed_cells + 1] = cell
  end
end

-- The hour's first batch drops history older than the retention: the revision below
-- which cells may be gone (nil when nothing expired).
local function expire_history(revs, rev)
  local hours = P .. 'ck'
  local hour = floor(now_s / 3600)
  if redis.call('HSETNX', hours, hour, rev) == 0 then return nil end
  local cut_rev = nil
  local all = redis.call('HGETALL', hours)
  for i = 1, #all, 2 do
    local h, r = tonumber(all[i]), tonumber(all[i + 1])
    if h <= hour - keep_hours then
      redis.call('HDEL', hours, all[i])
      if not cut_rev or r > cut_rev then cut_rev = r end
    end
  end
  if cut_rev and (tonumber(redis.call('HGET', revs, '/f')) or 0) < cut_rev - 1 then
    redis.call('HSET', revs, '/f', cut_rev - 1)
  end
  return cut_rev
end

-- One revision per batch, each changed cell scored with it once.
local function record_changes()
  local revs = P .. 'rv'
  local rev = redis.call('HINCRBY', revs, '#', 1)
  local cut_rev = expire_history(revs, rev)
  local zadd = {}
  for i = 1, #changed_cells do
    zadd[#zadd + 1] = rev
    zadd[#zadd + 1] = changed_cells[i]
  end
  local log = P .. 'ch'
  for i = 1, #zadd, 1000 do
    redis.call('ZADD', log, unpack(zadd, i, math.min(i + 999, #zadd)))
  end
  if cut_rev then redis.call('ZREMRANGEBYSCORE', log, '-inf', '(' .. cut_rev) end
end

local function seen(iid, q, t)
  local slot = floor(t / SLOT)
  local h = P .. 'qs:' .. iid
  local fl = redis.call('HMGET', h, q .. ':f', q .. ':l')
  if not fl[1] or tonumber(fl[1]) > slot then redis.call('HSET', h, q .. ':f', slot) end
  if not fl[2] or tonumber(fl[2]) < slot then redis.call('HSET', h, q .. ':l', slot) end
end

local needs, asked = {}, {}

local function refresh(iid, gid)
  local k = iid .. '\0' .. gid
  if not asked[k] then
    asked[k] = true
    needs[#needs + 1] = iid
    needs[#needs + 1] = gid
  end
end

-- An assignment (kind 4, webhook path): the chat's latest one is kept, "<time>:<gid>"
-- (latest time, then smallest group id: the same in any order); a time-0 entry is
-- Freshchat's conversation lookup, which any assignment seen replaces.
local function assign(akey, t, gid)
  local cur = redis.call('GET', akey)
  if cur then
    local ct, cg = string.match(cur, '^(%d+):(.*)$')
    ct = tonumber(ct)
    if ct and (ct > t or (ct == t and cg <= gid)) then
      redis.call('PEXPIRE', akey, chat_ttl)
      return
    end
  end
  redis.call('SET', akey, string.format('%.0f', t) .. ':' .. gid, 'PX', chat_ttl)
end

-- Returns nil when applied, or what is needed first: a group id's name, or '@'<chat> for
-- the chat's group from Freshchat's conversation lookup.
local function apply(ev)
  local iid, chat, kind, t, gid, gname = ev[1], ev[2], ev[3], ev[4], ev[5], ev[6]
  local ckey = P .. 'c:' .. iid .. ':' .. chat
  if gid ~= '' and gname ~= '' then learn(iid, gid, gname) end
  if kind == 0 or kind == 4 then
    if kind == 4 then assign(P .. 'a:' .. iid .. ':' .. chat, t, gid) end
    redis.call('PEXPIRE', ckey, chat_ttl)
    return nil
  end
  local source = nil -- why digit of a group found for a resolution that named none
  if kind == 3 then
    local v = redis.call('GET', P .. 'a:' .. iid .. ':' .. chat)
    if not v then return '@' .. chat end
    local at, g = string.match(v, '^(%d+):(.*)$')
    gid, kind = g or '', 1
    if at == '0' then source = '8' else source = '7' end
  end
  local qname, why = UNDEF, '5'
  if kind == 1 then
    why = '4'
    if gname ~= '' then
      qname, why = gname, '1'
    elseif gid ~= '' then
      local v = group_of(iid, gid)
      if not v then return gid end
      local mark = string.byte(v, 1)
      if mark == 0 then -- negative cache entry: "\0<expiry unix s>"
        if (tonumber(string.sub(v, 2)) or 0) <= now_s then return gid end
        why = '6'
      elseif mark == 1 then -- from Freshchat: "\1<expiry>\1<name>"; past expiry, refresh it
        local expiry, name = string.match(v, '^\1(%d+)\1(.*)$')
        qname, why = name or UNDEF, '3'
        if (tonumber(expiry) or 0) <= now_s then refresh(iid, gid) end
      else
        qname, why = v, '2'
      end
    end
    if source and gid ~= '' and why ~= '6' then why = source end
  end
  local q = qid_of(iid, qname)
  seen(iid, q, t)
  local cur = redis.call('GET', ckey)
  if cur then
    local ct, cq = decode(cur)
    if ct < t or (ct == t and (cq == q or name_of(iid, cq) <= qname)) then
      redis.call('PEXPIRE', ckey, chat_ttl)
      return nil
    end
    bump(iid, ct, cq, -1)
  end
  redis.call('SET', ckey, encode(t, q, why), 'PX', chat_ttl)
  bump(iid, t, q, 1)
  return nil
end

local function valid(fields)
  local raw
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'e' then raw = fields[i + 1] end
  end
  if not raw then return nil, 'entry has no event field' end
  local ok, ev = pcall(cjson.decode, raw)
  if not ok or type(ev) ~= 'table' or #ev ~= 6 then return nil, 'event is not a 6-element array' end
  ev.raw = raw
  local iid, chat, kind, t, gid, gname = ev[1], ev[2], ev[3], ev[4], ev[5], ev[6]
  if type(iid) ~= 'string' or not string.match(iid, '^[a-z0-9]+$') then return nil, 'bad integration id' end
  if type(chat) ~= 'string' or chat == '' then return nil, 'bad chat id' end
  if kind ~= 0 and kind ~= 1 and kind ~= 2 and kind ~= 3 and kind ~= 4 then return nil, 'bad kind' end
  if type(t) ~= 'number' or t <= 0 or t >= 8796093022208 or t ~= floor(t) then return nil, 'bad time' end
  if type(gid) ~= 'string' or type(gname) ~= 'string' then return nil, 'bad group' end
  local first = string.byte(gname, 1)
  if first == 0 or first == 1 then return nil, 'bad group name' end
  return ev, nil
end

local parked_iid = ARGV[11] or ''
if parked_iid ~= '' and start == '-' then redis.call('DEL', P .. 'pg:' .. parked_iid .. ':n') end
local entries = redis.call('XRANGE', src, start, stop, 'COUNT', count)
local done, dead_ids = {}, {}
local applied, last = 0, ''
local settled, settled_order = {}, {} -- iid -> events no longer pending (counted or dead)

local function settle(iid)
  if single then return end -- a dead-lettered event stopped being pending when it was
  if not settled[iid] then
    settled[iid] = 0
    settled_order[#settled_order + 1] = iid
  end
  settled[iid] = settled[iid] + 1
end

for _, entry in ipairs(entries) do
  local id, fields = entry[1], entry[2]
  last = id
  local ev, why = valid(fields)
  if not ev then
    if single then return {last, 0, {}, {}, why} end
    local copy = {'source', id, 'reason', why}
    for i = 1, #fields do copy[#copy + 1] = fields[i] end
    dead_ids[#dead_ids + 1] = redis.call('XADD', dead, '*', unpack(copy))
    done[#done + 1] = id
    local ok, raw = pcall(cjson.decode, fields[2] or '')
    if ok and type(raw) == 'table' and type(raw[1]) == 'string' then settle(raw[1]) end
  else
    local need = apply(ev)
    if need then
      refresh(ev[1], need)
      if parked_iid ~= '' then
        redis.call('SADD', P .. 'pg:' .. parked_iid .. ':n', need)
      elseif park and not single then
        local iid = ev[1]
        -- The original id keeps the arrival time (how long it waits, §8); ids only grow.
        local moved = redis.pcall('XADD', P .. 'pk:' .. iid, id, 'e', ev.raw)
        if type(moved) == 'table' and moved.err then
          redis.call('XADD', P .. 'pk:' .. iid, '*', 'e', ev.raw)
        end
        redis.call('SADD', P .. 'pw', iid)
        redis.call('SADD', P .. 'pg:' .. iid, need)
        done[#done + 1] = id
      end
    else
      applied = applied + 1
      done[#done + 1] = id
      settle(ev[1])
    end
  end
end

-- A pass over a parking stream rebuilds the set of group ids still waited for (into
-- P..'pg:'<iid>':n', renamed over the set once the pass reached the end, so a crash midway
-- leaves the old set); a stream that emptied waits for nothing any more.
if parked_iid ~= '' and #entries < count then
  local waits = P .. 'pg:' .. parked_iid
  if redis.call('XLEN', src) == 0 then
    redis.call('SREM', P .. 'pw', parked_iid)
    redis.call('DEL', waits, waits .. ':n')
  elseif redis.call('EXISTS', waits .. ':n') == 1 then
    redis.call('RENAME', waits .. ':n', waits)
  end
end

for _, iid in ipairs(settled_order) do
  if redis.call('HINCRBY', P .. 'pn', iid, -settled[iid]) <= 0 then
    redis.call('HDEL', P .. 'pn', iid)
  end
end

if #changed_cells > 0 then record_changes() end
if applied > 0 then redis.call('HINCRBY', stats, 'processed', applied) end
if #dead_ids > 0 then redis.call('HINCRBY', stats, 'dead', #dead_ids) end
for i = 1, #done, 1000 do
  redis.call('XDEL', src, unpack(done, i, math.min(i + 999, #done)))
end
return {last, applied, needs, dead_ids, ''}
