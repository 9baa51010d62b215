#!lua flags=
-- Apply a batch of compact events of one shard atomically (§4).
-- Per-chat state is a join-semilattice (earliest terminal time, then smallest queue
-- name), so applying an event twice, or events in any order, ends in the same counts.
--
-- KEYS[1] source stream, KEYS[2] dead-letter stream, KEYS[3] the shard's worker counters
-- ARGV: shard key prefix, start id ('-' or '(<id>'), count, chat ttl ms,
--       counts retention s, now (unix s), single ('1': fail instead of dead-letter), end id,
--       changes retention (hours)
-- Revisions (§6): every batch that changed counts takes the shard's next revision (hash
-- P..'rv', field '#'), and each changed 15-minute interval and queue is scored with it
-- once (zset P..'ch': "<iid>|<slot>:<qid>"); one revision and one ZADD per batch keep the
-- cost flat however many integrations a batch touches. The first revision of every
-- hour is kept (hash P..'ck') so that history older than the retention can be dropped,
-- raising the shard's floor (P..'rv' field '/f') below which `changes` says 410.
-- Returns {last id read, applied, {iid, gid, ...} needing a group name, {dead ids}, error}

local src, dead, stats = KEYS[1], KEYS[2], KEYS[3]
local P = ARGV[1]
local start, count = ARGV[2], tonumber(ARGV[3])
local chat_ttl, keep_s, now_s = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local single = ARGV[7] == '1'
local stop = ARGV[8] or '+'
local keep_hours = tonumber(ARGV[9] or '840')

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

local function encode(t, q)
  if q < QBITS then return string.format('%.0f', (t - EPOCH) * QBITS + q) end
  return string.format('%.0f:%d', t, q)
end

local function decode(v)
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

-- Returns nil when applied, or the group id whose name is needed first.
local function apply(ev)
  local iid, chat, kind, t, gid, gname = ev[1], ev[2], ev[3], ev[4], ev[5], ev[6]
  local ckey = P .. 'c:' .. iid .. ':' .. chat
  if gid ~= '' and gname ~= '' then learn(iid, gid, gname) end
  if kind == 0 then
    redis.call('PEXPIRE', ckey, chat_ttl)
    return nil
  end
  local qname = UNDEF
  if kind == 1 then
    if gname ~= '' then
      qname = gname
    elseif gid ~= '' then
      local v = group_of(iid, gid)
      if not v then return gid end
      local mark = string.byte(v, 1)
      if mark == 0 then -- negative cache entry: "\0<expiry unix s>"
        if (tonumber(string.sub(v, 2)) or 0) <= now_s then return gid end
      elseif mark == 1 then -- from Freshchat: "\1<expiry>\1<name>"; past expiry, refresh it
        local expiry, name = string.match(v, '^\1(%d+)\1(.*)$')
        qname = name or UNDEF
        if (tonumber(expiry) or 0) <= now_s then refresh(iid, gid) end
      else
        qname = v
      end
    end
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
  redis.call('SET', ckey, encode(t, q), 'PX', chat_ttl)
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
  local iid, chat, kind, t, gid, gname = ev[1], ev[2], ev[3], ev[4], ev[5], ev[6]
  if type(iid) ~= 'string' or not string.match(iid, '^[a-z0-9]+$') then return nil, 'bad integration id' end
  if type(chat) ~= 'string' or chat == '' then return nil, 'bad chat id' end
  if kind ~= 0 and kind ~= 1 and kind ~= 2 then return nil, 'bad kind' end
  if type(t) ~= 'number' or t <= 0 or t >= 8796093022208 or t ~= floor(t) then return nil, 'bad time' end
  if type(gid) ~= 'string' or type(gname) ~= 'string' then return nil, 'bad group' end
  local first = string.byte(gname, 1)
  if first == 0 or first == 1 then return nil, 'bad group name' end
  return ev, nil
end

local entries = redis.call('XRANGE', src, start, stop, 'COUNT', count)
local done, dead_ids = {}, {}
local applied, last = 0, ''

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
  else
    local need = apply(ev)
    if need then
      refresh(ev[1], need)
    else
      applied = applied + 1
      done[#done + 1] = id
    end
  end
end

if #changed_cells > 0 then record_changes() end
if applied > 0 then redis.call('HINCRBY', stats, 'processed', applied) end
if #dead_ids > 0 then redis.call('HINCRBY', stats, 'dead', #dead_ids) end
for i = 1, #done, 1000 do
  redis.call('XDEL', src, unpack(done, i, math.min(i + 999, #done)))
end
return {last, applied, needs, dead_ids, ''}
