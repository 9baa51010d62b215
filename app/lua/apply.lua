#!lua flags=
-- Count a batch of compact events of one shard atomically (§4); keep chat buckets.
-- Per-chat state is a join-semilattice (earliest terminal time, then smallest queue
-- name), so applying an event twice, or events in any order, ends in the same counts.
--
-- Keys (§14): every key this script touches is declared in KEYS, all in the shard's slot.
-- KEYS[1..9] are the shard's own: the source stream, dead-letter stream, worker counters,
-- revisions, changes, change hours, pending per integration, parked integrations, chat
-- buckets; then one key per tag (ARGV[13..], in the same order), named in Python
-- (`RedisKeys.tagged`). A tag is "<letter>|<iid>[|<number>]": s chat bucket, n counts of a
-- UTC day, g group names, qi queue names, qs queue stats, pk parking stream, pg group ids
-- the parked events wait for, pr the same set being rebuilt. The caller plans each batch
-- (`workers.applier`): after the tags, ARGV holds the bucket count it placed each
-- integration's chats with ("<iid>", "<n>" pairs, ARGV[12] of them), the first and last
-- entry ids it read, and per entry the KEYS indexes of its chat's bucket and of its day's
-- counts. The script checks the counts (else it answers with today's, nothing applied) and
-- the entries (else nothing applied: read again). A key found needed only while applying
-- (the counts of a day a chat moves out of, a parking stream) leaves the event that needs
-- it in the stream: the reply lists the missing tags, and the caller applies what is left
-- of the range with them declared (counts do not depend on the order, §4).
--
-- ARGV: [1] mode: 'apply', 'migrate' or 'split' (see there), 'sweep' (forget the entries
-- of integration ARGV[2]'s declared buckets untouched for ARGV[3] days at unix time
-- ARGV[4]) or 'lookup' (keep ARGV[4] as chat ARGV[3]'s group from Freshchat's lookup, at
-- unix time ARGV[5]);
-- for apply: [2] start id ('-' or '(<id>'), [3] count, [4] end id, [5] chat ttl days,
-- [6] counts retention s, [7] now (unix s), [8] single ('1': fail instead of dead-letter),
-- [9] changes retention (hours), [10] park ('1': events waiting for a group name are moved
-- to their integration's parking stream, so that no later drain of the shard reads them
-- again; '0' when KEYS[1] is such a parking stream: they stay put), [11] the parked
-- integration's id when KEYS[1] is its parking stream (else ''), [12] see above.
--
-- Chat state (§10 memory) lives in small hashes that Redis keeps in its compact listpack
-- encoding: an integration's chats are spread over n buckets by linear hashing on the
-- first 7 hex digits h of SHA-1(chat); KEYS[9] holds n (field <iid>) and the entries kept
-- (field <iid>#); the caller splits buckets before a batch that could fill them past
-- SPLIT_AT entries each (`app.chat_state`), so its plan places chats where they will be.
-- Field <chat>: "<state><why digit><touched day mod 100>", an integer Redis stores in
-- 8 bytes; field "@<chat>": the latest assignment seen on the webhook path (§12),
-- "<touched day mod 100><time ms>:<group id>" (time 0: from Freshchat's conversation
-- lookup). Retention is the sweep's: an entry untouched for the chat TTL is deleted.
-- The why digit says why the chat is in its queue (§7 explain): 1 name in the event,
-- 2 name learnt from another event, 3 name from Freshchat, 4 no group, 5 deleted or spam,
-- 6 group unknown to Freshchat, 7 group of the chat's latest assignment (webhook path),
-- 8 group from Freshchat's conversation lookup.
-- Revisions (§6): every batch that changed counts takes the shard's next revision (field
-- '#' of KEYS[4]), and each changed 15-minute interval and queue is scored with it once
-- (zset KEYS[5]: "<iid>|<slot>:<qid>"); one revision and one ZADD per batch keep the cost
-- flat however many integrations a batch touches. The first revision of every hour is kept
-- (KEYS[6]) so that history older than the retention can be dropped, raising the shard's
-- floor (field '/f' of KEYS[4]) below which `changes` says 410.
-- Kinds: 0 other, 1 solved, 2 deleted/spam, 3 solved naming no group (webhook path: the
-- group of the chat's latest assignment, else Freshchat's lookup), 4 assigned (webhook path).
-- Replies: apply {last id applied, applied, {iid, gid, ...} needing a group name, {dead
-- ids}, error, {missing tags}, {iid, entries its buckets hold, ...}, {iid, bucket count, ...}
-- when the plan's counts are out of date}; split see there; sweep the number of entries
-- forgotten; lookup 1, or 0 (place the chat again).

local src, dead, stats, revs, log, hours, pending, parked_set, buckets =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local FIXED = 9
local TAGS_AT = 13 -- ARGV index of the first tag, in every mode
local mode = ARGV[1]

local UNDEF = 'Undefined_Queue'
local EPOCH = 1577836800000 -- 2020-01-01T00:00Z in ms
local QBITS = 4096          -- state = (t - EPOCH) * QBITS + qid: one integer, exact below 2^53
local SLOT = 900000         -- 15 minutes in ms
local DAY_MS = 86400000
local TOUCH = 100           -- the touched day is kept modulo this (two digits)
local HASH_HEX = 7          -- hex digits of SHA-1(chat) that place a chat in a bucket

local floor = math.floor

-- Declared keys by tag.
local K = {}
for i = FIXED + 1, #KEYS do K[ARGV[i + TAGS_AT - FIXED - 1]] = KEYS[i] end

local function hash_of(chat)
  return tonumber(string.sub(redis.sha1hex(chat), 1, HASH_HEX), 16)
end

-- Linear hashing: n buckets, 2^L <= n < 2^(L+1).
local function low_of(n)
  local low = 1
  while low * 2 <= n do low = low * 2 end
  return low
end

local function bucket_of(h, n, low)
  local b = h % (low * 2)
  if b >= n then b = h % low end
  return b
end

local layout = {} -- iid -> {n, low}
local function layout_of(iid)
  local l = layout[iid]
  if not l then
    local n = tonumber(redis.call('HGET', buckets, iid)) or 1
    l = {n, low_of(n)}
    layout[iid] = l
  end
  return l
end

local function bucket_tag(iid, chat)
  local l = layout_of(iid)
  return 's|' .. iid .. '|' .. bucket_of(hash_of(chat), l[1], l[2])
end

local function day_tag(iid, t)
  return 'n|' .. iid .. '|' .. string.format('%d', floor(t / DAY_MS))
end

local function today_mark(now_s)
  return string.format('%02d', floor(now_s / 86400) % TOUCH)
end

-- Split chat buckets (linear hashing, within one round: n + k <= 2^(L+1)): the entries of
-- bucket n - 2^L whose hash says n move to the new bucket n; both are written afresh, so
-- both are listpacks again. After the tags, ARGV holds triples: integration, its bucket
-- count, the splits to make. Answers each integration's bucket count after (0: it was not
-- the count given, nothing split).
if mode == 'split' then
  local out = {}
  for t = TAGS_AT + #KEYS - FIXED, #ARGV, 3 do
    local iid, expected, k = ARGV[t], tonumber(ARGV[t + 1]), tonumber(ARGV[t + 2])
    local n = tonumber(redis.call('HGET', buckets, iid)) or 1
    if n ~= expected then
      out[#out + 1] = 0
    else
      local low = low_of(n)
      for _ = 1, k do
        if n >= low * 2 then break end
        local from = K['s|' .. iid .. '|' .. (n - low)]
        local to = K['s|' .. iid .. '|' .. n]
        local all = redis.call('HGETALL', from)
        local stay, move = {}, {}
        for i = 1, #all, 2 do
          local f = all[i]
          local chat = f
          if string.byte(f, 1) == 64 then chat = string.sub(f, 2) end -- '@': an assignment
          local side = stay
          if hash_of(chat) % (low * 2) == n then side = move end
          side[#side + 1] = f
          side[#side + 1] = all[i + 1]
        end
        redis.call('DEL', from)
        for i = 1, #stay, 256 do
          redis.call('HSET', from, unpack(stay, i, math.min(i + 255, #stay)))
        end
        for i = 1, #move, 256 do
          redis.call('HSET', to, unpack(move, i, math.min(i + 255, #move)))
        end
        n = n + 1
      end
      redis.call('HSET', buckets, iid, n)
      out[#out + 1] = n
    end
  end
  return out
end

-- Forget the entries of the declared buckets untouched for the chat TTL (days).
if mode == 'sweep' then
  local iid, ttl_days, now_s = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
  local today = floor(now_s / 86400) % TOUCH
  local gone = 0
  for i = FIXED + 1, #KEYS do
    local all = redis.call('HGETALL', KEYS[i])
    local stale = {}
    for j = 1, #all, 2 do
      local v = all[j + 1]
      local mark
      if string.byte(all[j], 1) == 64 then -- '@': an assignment, marked first
        mark = string.sub(v, 1, 2)
      else
        mark = string.sub(v, -2)
      end
      if (today - (tonumber(mark) or 0)) % TOUCH >= ttl_days then stale[#stale + 1] = all[j] end
    end
    for j = 1, #stale, 256 do
      gone = gone + redis.call('HDEL', KEYS[i], unpack(stale, j, math.min(j + 255, #stale)))
    end
  end
  if gone > 0 then redis.call('HINCRBY', buckets, iid .. '#', -gone) end
  return gone
end

-- Remember the chat's group from Freshchat's conversation lookup (§12) as its assignment at
-- time 0, unless an assignment is known already. 1: written or known; 0: the chat's bucket
-- is not the declared one (it split meanwhile: place it again).
if mode == 'lookup' then
  local iid, chat, gid = ARGV[2], ARGV[3], ARGV[4]
  local bucket = K[bucket_tag(iid, chat)]
  if not bucket then return 0 end
  local value = today_mark(tonumber(ARGV[5])) .. '0:' .. gid
  if redis.call('HSETNX', bucket, '@' .. chat, value) == 1 then
    redis.call('HINCRBY', buckets, iid .. '#', 1)
  end
  return 1
end

-- Move chat state kept the old way (a key with a TTL per chat: tags "c|<iid>|<chat>" for
-- states, "a|<iid>|<chat>" for assignments) into the chat buckets, touched on the day its TTL
-- says it was last renewed, at unix time ARGV[2] with a chat TTL of ARGV[3] days; an entry
-- already in its bucket stays. Answers the entries added.
if mode == 'migrate' then
  local now_s, ttl_days = tonumber(ARGV[2]), tonumber(ARGV[3])
  local today = floor(now_s / 86400)
  local moved = {}
  for i = FIXED + 1, #KEYS do
    local tag = ARGV[i + TAGS_AT - FIXED - 1]
    local kind, iid, chat = string.match(tag, '^([ca])|([^|]+)|(.*)$')
    if kind then
      local v = redis.call('GET', KEYS[i])
      local left = redis.call('PTTL', KEYS[i])
      if v then
        local days_left = left > 0 and math.ceil(left / 86400000) or ttl_days
        local mark = string.format('%02d', (today - math.max(0, ttl_days - days_left)) % TOUCH)
        local bucket = K[bucket_tag(iid, chat)]
        local field, value = chat, v .. mark
        if kind == 'a' then field, value = '@' .. chat, mark .. v end
        if redis.call('HSETNX', bucket, field, value) == 1 then
          moved[iid] = (moved[iid] or 0) + 1
        end
        redis.call('DEL', KEYS[i])
      end
    end
  end
  local total = 0
  for iid, n in pairs(moved) do
    redis.call('HINCRBY', buckets, iid .. '#', n)
    total = total + n
  end
  return total
end

local start, count, stop = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local ttl_days, keep_s, now_s = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local single = ARGV[8] == '1'
local keep_hours = tonumber(ARGV[9])
local park = ARGV[10] == '1'
local parked_iid = ARGV[11]
local touched = today_mark(now_s)

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

local entries = redis.call('XRANGE', src, start, stop, 'COUNT', count)


local gcache, qcache, ncache = {}, {}, {}
local changed, changed_cells = {}, {} -- "<iid>|<slot>:<qid>" changed by this batch
local missing = {}

-- The declared key of a tag, or nil (the tag noted as missing).
-- An integration's own keys, looked up once per batch.
local own = {}
local function keys_of(iid)
  local o = own[iid]
  if not o then
    o = {g = K['g|' .. iid], qi = K['qi|' .. iid], qs = K['qs|' .. iid]}
    own[iid] = o
  end
  return o
end

local missing_seen = {}
local function key(tag)
  local k = K[tag]
  if not k and not missing_seen[tag] then
    missing_seen[tag] = true
    missing[#missing + 1] = tag
  end
  return k
end

local function group_of(iid, gid)
  local k = iid .. '\0' .. gid
  local v = gcache[k]
  if v == nil then
    v = redis.call('HGET', keys_of(iid).g, gid) or false
    gcache[k] = v
  end
  return v
end

local function learn(iid, gid, name)
  if group_of(iid, gid) ~= name then
    redis.call('HSET', keys_of(iid).g, gid, name)
    gcache[iid .. '\0' .. gid] = name
  end
end

local function qid_of(iid, name)
  if name == UNDEF then return 0 end
  local k = iid .. '\0' .. name
  local q = qcache[k]
  if q then return q end
  local h = keys_of(iid).qi
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
    n = redis.call('HGET', keys_of(iid).qi, '#' .. q) or ''
    ncache[k] = n
  end
  return n
end

local function encode(t, q, why)
  if q < QBITS then return string.format('%.0f', (t - EPOCH) * QBITS + q) .. why .. touched end
  return string.format('%.0f:%d', t, q) .. why .. touched
end

local function decode(v)
  v = string.sub(v, 1, -4) -- the why digit and the touched day
  local t, q = string.match(v, '^(%d+):(%d+)$')
  if t then return tonumber(t), tonumber(q) end
  local n = tonumber(v)
  local qq = n % QBITS
  return (n - qq) / QBITS + EPOCH, qq
end

-- Count changes are summed per field while the batch runs and written once at its end:
-- a batch's events share few intervals and queues.
local deltas, delta_keys, grows = {}, {}, {} -- key -> {field -> delta}; keys in order; key -> day
local qdeltas, qd_order = {}, {}             -- qs key -> {q -> delta}
local function bump(key_n, iid, t, q, delta)
  local slot = floor(t / SLOT)
  local day = floor(slot / 96)
  local field = string.format('%d:%d', slot - day * 96, q)
  local d = deltas[key_n]
  if not d then
    d = {}
    deltas[key_n] = d
    delta_keys[#delta_keys + 1] = key_n
  end
  d[field] = (d[field] or 0) + delta
  if delta > 0 then grows[key_n] = day end
  local qs = keys_of(iid).qs
  local qd = qdeltas[qs]
  if not qd then
    qd = {}
    qdeltas[qs] = qd
    qd_order[#qd_order + 1] = qs
  end
  qd[q] = (qd[q] or 0) + delta
  local cell = string.format('%s|%d:%d', iid, slot, q)
  if not changed[cell] then
    changed[cell] = true
    changed_cells[#changed_cells + 1] = cell
  end
end

local function write_counts()
  for _, key_n in ipairs(delta_keys) do
    for field, delta in pairs(deltas[key_n]) do
      if delta ~= 0 and redis.call('HINCRBY', key_n, field, delta) <= 0 then
        redis.call('HDEL', key_n, field)
      end
    end
    if grows[key_n] then redis.call('EXPIREAT', key_n, (grows[key_n] + 1) * 86400 + keep_s) end
  end
  for _, qs in ipairs(qd_order) do
    for q, delta in pairs(qdeltas[qs]) do
      if delta ~= 0 then redis.call('HINCRBY', qs, q .. ':n', delta) end
    end
  end
end

-- The hour's first batch drops history older than the retention: the revision below
-- which cells may be gone (nil when nothing expired).
local function expire_history(rev)
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
  local rev = redis.call('HINCRBY', revs, '#', 1)
  local cut_rev = expire_history(rev)
  local zadd = {}
  for i = 1, #changed_cells do
    zadd[#zadd + 1] = rev
    zadd[#zadd + 1] = changed_cells[i]
  end
  for i = 1, #zadd, 1000 do
    redis.call('ZADD', log, unpack(zadd, i, math.min(i + 999, #zadd)))
  end
  if cut_rev then redis.call('ZREMRANGEBYSCORE', log, '-inf', '(' .. cut_rev) end
end

-- Each queue's first and last interval seen, read once per batch and written at its end.
local spans, span_order = {}, {} -- "<qs key>\0<q>" -> {key, q, first, last, changed}
local function seen(iid, q, t)
  local slot = floor(t / SLOT)
  local h = keys_of(iid).qs
  local k = h .. '\0' .. q
  local sp = spans[k]
  if not sp then
    local fl = redis.call('HMGET', h, q .. ':f', q .. ':l')
    sp = {h, q, tonumber(fl[1]), tonumber(fl[2]), false}
    spans[k] = sp
    span_order[#span_order + 1] = sp
  end
  if not sp[3] or sp[3] > slot then sp[3], sp[5] = slot, true end
  if not sp[4] or sp[4] < slot then sp[4], sp[5] = slot, true end
end

local function write_spans()
  for _, sp in ipairs(span_order) do
    if sp[5] then redis.call('HSET', sp[1], sp[2] .. ':f', sp[3], sp[2] .. ':l', sp[4]) end
  end
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

local added = {} -- iid -> entries added to its buckets by this batch
local function add_entry(iid)
  added[iid] = (added[iid] or 0) + 1
end

-- An entry of a bucket written with today's touched mark (a write only when it changes).
local function touch_state(bucket, chat, cur)
  if string.sub(cur, -2) ~= touched then
    redis.call('HSET', bucket, chat, string.sub(cur, 1, -3) .. touched)
  end
end

-- An assignment (kind 4, webhook path): the chat's latest one is kept, "<time>:<gid>"
-- (latest time, then smallest group id: the same in any order); a time-0 entry is
-- Freshchat's conversation lookup, which any assignment seen replaces.
local function assign(iid, bucket, chat, t, gid)
  local field = '@' .. chat
  local cur = redis.call('HGET', bucket, field)
  if cur then
    local ct, cg = string.match(cur, '^%d%d(%d+):(.*)$')
    ct = tonumber(ct)
    if ct and (ct > t or (ct == t and cg <= gid)) then
      if string.sub(cur, 1, 2) ~= touched then
        redis.call('HSET', bucket, field, touched .. string.sub(cur, 3))
      end
      return
    end
  else
    add_entry(iid)
  end
  redis.call('HSET', bucket, field, touched .. string.format('%.0f', t) .. ':' .. gid)
end

-- Applies one event. Returns nil when applied, false when a key is missing (nothing
-- written), or what is needed first: a group id's name, or '@'<chat> for the chat's group
-- from Freshchat's conversation lookup.
local function apply(ev, bucket, key_n)
  local iid, chat, kind, t, gid, gname = ev[1], ev[2], ev[3], ev[4], ev[5], ev[6]
  if gid ~= '' and gname ~= '' then learn(iid, gid, gname) end
  if kind == 0 or kind == 4 then
    if kind == 4 then assign(iid, bucket, chat, t, gid) end
    local cur = redis.call('HGET', bucket, chat)
    if cur then touch_state(bucket, chat, cur) end
    return nil
  end
  local source = nil -- why digit of a group found for a resolution that named none
  if kind == 3 then
    local v = redis.call('HGET', bucket, '@' .. chat)
    if not v then return '@' .. chat end
    local at, g = string.match(v, '^%d%d(%d+):(.*)$')
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
  -- (A queue id and its first/last interval are written before a missing key may stop the
  -- event: both writes are the same when the event is applied again.)
  local q = qid_of(iid, qname)
  seen(iid, q, t)
  local cur = redis.call('HGET', bucket, chat)
  local ct, cq, old_n
  if cur then
    ct, cq = decode(cur)
    if ct < t or (ct == t and (cq == q or name_of(iid, cq) <= qname)) then
      touch_state(bucket, chat, cur)
      return nil
    end
    old_n = key(day_tag(iid, ct))
    if not old_n then return false end
  end
  if cur then
    bump(old_n, iid, ct, cq, -1)
  else
    add_entry(iid)
  end
  redis.call('HSET', bucket, chat, encode(t, q, why))
  bump(key_n, iid, t, q, 1)
  return nil
end

if parked_iid ~= '' and start == '-' then redis.call('DEL', K['pr|' .. parked_iid]) end
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

-- The caller's plan: each integration's bucket count it placed chats with (checked here:
-- another worker may have split them since), then the first and last entry ids it read and
-- per entry the KEYS index of its chat's bucket and of its day's counts (0: none), as one
-- string "b,d,b,d,...".
local plan_at = TAGS_AT + #KEYS - FIXED
local layouts = tonumber(ARGV[12])
local stale = {}
if layouts > 0 then
  local ids = {}
  for i = plan_at, plan_at + 2 * layouts - 1, 2 do ids[#ids + 1] = ARGV[i] end
  local counts_now = redis.call('HMGET', buckets, unpack(ids))
  for j = 1, layouts do
    local now_n = tonumber(counts_now[j]) or 1
    if now_n ~= tonumber(ARGV[plan_at + 2 * j - 1]) then
      stale[#stale + 1] = ids[j]
      stale[#stale + 1] = now_n
    end
  end
end
if #stale > 0 then return {'', 0, {}, {}, '', {}, {}, stale} end
local planned = plan_at + 2 * layouts
local indexes = string.gmatch(ARGV[planned + 2] or '', '(%d+),(%d+)')
if #entries > 0 then
  local first, final = ARGV[planned], ARGV[planned + 1]
  local _, commas = string.gsub(ARGV[planned + 2] or '', ',', ',')
  if entries[1][1] ~= first or entries[#entries][1] ~= final or (commas + 1) / 2 ~= #entries then
    -- Not the entries the caller planned (another drain took some): read them again.
    return {'', 0, {}, {}, '', {''}, {}, {}}
  end
end

local complete = true -- every entry of the range was read
for _, entry in ipairs(entries) do
  local id, fields = entry[1], entry[2]
  local b, d = indexes()
  b, d = tonumber(b), tonumber(d)
  local ev, why = valid(fields)
  if not ev then
    last = id
    if single then return {last, 0, {}, {}, why, {}, {}, {}} end
    local copy = {'source', id, 'reason', why}
    for i = 1, #fields do copy[#copy + 1] = fields[i] end
    dead_ids[#dead_ids + 1] = redis.call('XADD', dead, '*', unpack(copy))
    done[#done + 1] = id
    local ok, raw = pcall(cjson.decode, fields[2] or '')
    if ok and type(raw) == 'table' and type(raw[1]) == 'string' then settle(raw[1]) end
  else
    local need = false
    if b > 0 and (d > 0 or ev[3] == 0 or ev[3] == 4) then
      need = apply(ev, KEYS[b], KEYS[d])
    end
    last = id
    if need == false then
      -- A key not declared: the event stays in the stream, nothing written for it; the
      -- caller reads the range again (only such events are left) with the keys declared.
      -- Counts do not depend on the order events are applied in (§4).
      complete = false
    elseif need then
      refresh(ev[1], need)
      if parked_iid ~= '' then
        redis.call('SADD', K['pr|' .. parked_iid], need)
      elseif park and not single then
        -- Parking is rare: its keys are declared once an event needs them.
        local iid = ev[1]
        local stream, waits = key('pk|' .. iid), key('pg|' .. iid)
        if stream and waits then
          -- The original id keeps the arrival time (how long it waits, §8); ids only grow.
          local moved = redis.pcall('XADD', stream, id, 'e', ev.raw)
          if type(moved) == 'table' and moved.err then
            redis.call('XADD', stream, '*', 'e', ev.raw)
          end
          redis.call('SADD', parked_set, iid)
          redis.call('SADD', waits, need)
          done[#done + 1] = id
        else
          complete = false
        end
      end
    else
      applied = applied + 1
      done[#done + 1] = id
      settle(ev[1])
    end
  end
end

-- A pass over a parking stream rebuilds the set of group ids still waited for (into the
-- 'pr' set, renamed over the 'pg' set once the pass reached the end, so a crash midway
-- leaves the old set); a stream that emptied waits for nothing any more.
if complete and parked_iid ~= '' and #entries < count then
  local waits, rebuilt = K['pg|' .. parked_iid], K['pr|' .. parked_iid]
  if redis.call('XLEN', src) == #done then
    redis.call('SREM', parked_set, parked_iid)
    redis.call('DEL', waits, rebuilt)
  elseif redis.call('EXISTS', rebuilt) == 1 then
    redis.call('RENAME', rebuilt, waits)
  end
end

for _, iid in ipairs(settled_order) do
  if redis.call('HINCRBY', pending, iid, -settled[iid]) <= 0 then
    redis.call('HDEL', pending, iid)
  end
end

local kept = {} -- {iid, entries its buckets hold now, ...} for the caller's splits
for iid, n in pairs(added) do
  kept[#kept + 1] = iid
  kept[#kept + 1] = redis.call('HINCRBY', buckets, iid .. '#', n)
end

write_counts()
write_spans()
if #changed_cells > 0 then record_changes() end
if applied > 0 then redis.call('HINCRBY', stats, 'processed', applied) end
if #dead_ids > 0 then redis.call('HINCRBY', stats, 'dead', #dead_ids) end
for i = 1, #done, 1000 do
  redis.call('XDEL', src, unpack(done, i, math.min(i + 999, #done)))
end
return {last, applied, needs, dead_ids, '', missing, kept, {}}
