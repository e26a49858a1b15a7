/*
 * Drives a reshard router's Moray port with the real npm moray client and
 * checks every answer. Usage: node scenario.js HOST:PORT
 * Prints one line per check and a JSON summary last; exits 1 on a failure.
 */
'use strict';

var assert = require('assert');
var net = require('net');
var bunyan = require('bunyan');
var fast = require('fast');
var moray = require('moray');

var addr = process.argv[2] || '127.0.0.1:2020';
var host = addr.split(':')[0];
var port = parseInt(addr.split(':')[1], 10);
var log = bunyan.createLogger({name: 'scenario', level: 'fatal'});
var BUCKET = 'testmanta'; /* hashed by directory, as electric-moray does */
var checks = 0;

function client(crcMode) {
    return (moray.createClient({
        host: host, port: port, log: log, unwrapErrors: true,
        crc_mode: crcMode, failFast: true
    }));
}

function p(fn) {
    return (new Promise(function (resolve, reject) {
        fn(function (err, res) { if (err) { reject(err); } else { resolve(res); } });
    }));
}

/* expectError runs fn and checks it fails with the named Moray error. */
async function expectError(name, what, fn) {
    try {
        await fn();
    } catch (err) {
        assert.strictEqual(err.name, name, what + ': got ' + err.name + ': ' + err.message);
        ok(what + ' -> ' + name + ' (' + err.message + ')');
        return (err);
    }
    throw new Error(what + ': succeeded, expected ' + name);
}

function ok(msg) {
    checks++;
    console.log('ok ' + checks + ' ' + msg);
}

function find(c, bucket, filter, opts) {
    return (new Promise(function (resolve, reject) {
        var recs = [];
        var req = c.findObjects(bucket, filter, opts);
        req.on('record', function (r) { recs.push(r); });
        req.once('error', reject);
        req.once('end', function () { resolve(recs); });
    }));
}

/* rawRPC sends one RPC with the fast client itself, for what the moray client never sends. */
function rawRPC(method, args) {
    return (new Promise(function (resolve, reject) {
        var sock = net.connect(port, host);
        sock.on('connect', function () {
            var fc = new fast.FastClient({log: log, transport: sock, nRecentRequests: 1});
            var data = [];
            var req = fc.rpc({rpcmethod: method, rpcargs: args});
            req.on('data', function (d) { data.push(d); });
            req.once('end', function () { sock.destroy(); resolve(data); });
            req.once('error', function (err) {
                sock.destroy();
                /* Unwrap the client's FastRequestError and FastServerError. */
                while ((err.name === 'FastRequestError' || err.name === 'FastServerError') &&
                    typeof (err.cause) === 'function' && err.cause()) {
                    err = err.cause();
                }
                reject(err);
            });
        });
        sock.on('error', reject);
    }));
}

async function main() {
    var c = client(fast.FAST_CHECKSUM_V1);
    await new Promise(function (resolve) { c.once('connect', resolve); });

    assert.strictEqual(await p(function (cb) { c.versionInternal({}, cb); }), 2);
    ok('version is 2');
    await p(function (cb) { c.ping({}, cb); });
    ok('ping');

    /* Buckets. */
    try { await p(function (cb) { c.delBucket(BUCKET, cb); }); } catch (e) {}
    var cfg = {
        index: {
            dirname: {type: 'string'}, name: {type: 'string'}, type: {type: 'string'},
            size: {type: 'number'}, visible: {type: 'boolean'},
            tags: {type: '[string]'}, uid: {type: 'string', unique: true}
        },
        options: {version: 1}
    };
    await p(function (cb) { c.createBucket(BUCKET, cfg, cb); });
    ok('createBucket with indexes');
    await expectError('BucketConflictError', 'createBucket again', function () {
        return (p(function (cb) { c.createBucket(BUCKET, cfg, cb); }));
    });
    await p(function (cb) { c.putBucket(BUCKET, cfg, cb); });
    ok('putBucket of an existing bucket (getBucket, then a no-op)');
    var b = await p(function (cb) { c.getBucket(BUCKET, cb); });
    assert.strictEqual(b.name, BUCKET);
    assert.deepStrictEqual(b.index.size, {type: 'number'});
    assert.deepStrictEqual(b.index.uid, {type: 'string', unique: true});
    assert.strictEqual(b.options.version, 1);
    assert.ok(b.mtime instanceof Date && !isNaN(b.mtime.getTime()), 'mtime ' + b.mtime);
    ok('getBucket returns the indexes, options and mtime');
    var all = await p(function (cb) { c.listBuckets(cb); });
    assert.ok(all.some(function (x) { return (x.name === BUCKET); }), 'listBuckets lacks ' + BUCKET);
    ok('listBuckets lists it');
    await expectError('BucketNotFoundError', 'getBucket of a missing bucket', function () {
        return (p(function (cb) { c.getBucket('nosuchbucket', cb); }));
    });
    await expectError('InvalidBucketNameError', 'createBucket with a bad name', function () {
        return (p(function (cb) { c.createBucket('Bad-Name', cfg, cb); }));
    });
    await expectError('InvalidBucketConfigError', 'createBucket with a bad index type', function () {
        return (p(function (cb) { c.createBucket('badindex', {index: {a: {type: 'ipaddr'}}}, cb); }));
    });
    var cfg2 = JSON.parse(JSON.stringify(cfg));
    cfg2.index.owner = {type: 'string'};
    cfg2.options.version = 2;
    await p(function (cb) { c.updateBucket(BUCKET, cfg2, cb); });
    b = await p(function (cb) { c.getBucket(BUCKET, cb); });
    assert.deepStrictEqual(b.index.owner, {type: 'string'});
    assert.strictEqual(b.options.version, 2);
    ok('updateBucket adds an index and bumps the version');
    await expectError('BucketVersionError', 'updateBucket to an older version', function () {
        return (p(function (cb) { c.updateBucket(BUCKET, cfg, cb); }));
    });

    /* Objects: CRUD and etags. */
    var dir = '/a3829ca2-0966-60ce-9dc3-e4e9060f0950/stor/d';
    var k1 = dir + '/obj1';
    var v1 = {dirname: dir, name: 'obj1', type: 'object', size: 5, visible: true,
        tags: ['red', 'big'], uid: 'u1', owner: 'alice', nested: {a: [1, 2]}};
    var put = await p(function (cb) { c.putObject(BUCKET, k1, v1, cb); });
    assert.ok(typeof (put.etag) === 'string' && put.etag.length > 0, 'etag ' + put.etag);
    ok('putObject returns an etag');
    var got = await p(function (cb) { c.getObject(BUCKET, k1, cb); });
    assert.strictEqual(got.bucket, BUCKET);
    assert.strictEqual(got.key, k1);
    assert.deepStrictEqual(got.value, v1);
    assert.strictEqual(got._etag, put.etag);
    assert.ok(typeof (got._id) === 'number' && got._id > 0, '_id ' + got._id);
    assert.ok(typeof (got._mtime) === 'number' && Math.abs(got._mtime - Date.now()) < 60000, '_mtime ' + got._mtime);
    ok('getObject returns bucket, key, value, _id, _etag, _mtime');
    got = await p(function (cb) { c.getObject(BUCKET, k1, {requireOnlineReindexing: true}, cb); });
    assert.strictEqual(got.key, k1);
    ok('getObject with requireOnlineReindexing');
    await expectError('ObjectNotFoundError', 'getObject of a missing key', function () {
        return (p(function (cb) { c.getObject(BUCKET, dir + '/none', cb); }));
    });
    var e = await expectError('EtagConflictError', 'putObject with a wrong etag', function () {
        return (p(function (cb) { c.putObject(BUCKET, k1, v1, {etag: 'wrong'}, cb); }));
    });
    assert.strictEqual(e.context.actual, put.etag);
    await expectError('EtagConflictError', 'putObject with etag null over an existing object', function () {
        return (p(function (cb) { c.putObject(BUCKET, k1, v1, {etag: null}, cb); }));
    });
    await expectError('EtagConflictError', 'putObject with an etag on a missing object', function () {
        return (p(function (cb) { c.putObject(BUCKET, dir + '/none', v1, {etag: put.etag}, cb); }));
    });
    var v1b = Object.assign({}, v1, {size: 6});
    var put2 = await p(function (cb) { c.putObject(BUCKET, k1, v1b, {etag: put.etag}, cb); });
    assert.notStrictEqual(put2.etag, put.etag);
    ok('putObject with the right etag replaces the object');
    var k2 = dir + '/new';
    await p(function (cb) { c.putObject(BUCKET, k2, {dirname: dir, name: 'new', uid: 'u2'}, {etag: null}, cb); });
    ok('putObject with etag null creates a new object');
    await expectError('UniqueAttributeError', 'putObject repeating a unique attribute', function () {
        return (p(function (cb) { c.putObject(BUCKET, dir + '/dup', {dirname: dir, uid: 'u2'}, cb); }));
    });
    await expectError('EtagConflictError', 'delObject with a wrong etag', function () {
        return (p(function (cb) { c.delObject(BUCKET, k2, {etag: 'wrong'}, cb); }));
    });
    await p(function (cb) { c.delObject(BUCKET, k2, cb); });
    await expectError('ObjectNotFoundError', 'getObject after delObject', function () {
        return (p(function (cb) { c.getObject(BUCKET, k2, cb); }));
    });
    await expectError('ObjectNotFoundError', 'delObject of a missing key', function () {
        return (p(function (cb) { c.delObject(BUCKET, k2, cb); }));
    });
    await expectError('BucketNotFoundError', 'putObject into a missing bucket', function () {
        return (p(function (cb) { c.putObject('nosuchbucket', 'k', {}, cb); }));
    });

    /* findObjects. */
    for (var i = 0; i < 20; i++) {
        var v = {dirname: dir, name: 'f' + String(i).padStart(2, '0'), type: i % 4 === 0 ? 'directory' : 'object',
            size: i * 10, visible: i % 2 === 0, tags: i % 3 === 0 ? ['red'] : ['blue'], uid: 'f' + i, owner: 'bob'};
        await p(function (cb) { c.putObject(BUCKET, dir + '/' + v.name, v, cb); });
    }
    var recs = await find(c, BUCKET, '(&(dirname=' + dir + ')(type=object))', {hashkey: dir});
    assert.strictEqual(recs.length, 16, 'objects: ' + recs.length);
    recs.forEach(function (r) {
        assert.strictEqual(r.value.type, 'object');
        assert.strictEqual(r._count, 16);
        assert.strictEqual(r.bucket, BUCKET);
        assert.ok(r._id > 0 && r._etag && r._mtime > 0);
    });
    ok('findObjects with an AND filter and hashkey: 16 records, _count 16');
    recs = await find(c, BUCKET, '(&(dirname=' + dir + ')(size>=100))', {hashkey: dir,
        sort: {attribute: 'size', order: 'DESC'}, limit: 3, offset: 2});
    assert.deepStrictEqual(recs.map(function (r) { return (r.value.size); }), [170, 160, 150]);
    assert.strictEqual(recs[0]._count, 10);
    ok('findObjects sorts by a number index, DESC, with limit and offset');
    recs = await find(c, BUCKET, '(&(dirname=' + dir + ')(name=f1*))', {hashkey: dir, sort: {attribute: 'name', order: 'ASC'}});
    assert.deepStrictEqual(recs.map(function (r) { return (r.value.name); }),
        ['f10', 'f11', 'f12', 'f13', 'f14', 'f15', 'f16', 'f17', 'f18', 'f19']);
    ok('findObjects with a substring filter');
    recs = await find(c, BUCKET, '(&(dirname=' + dir + ')(tags=red)(!(type=directory))(visible=true))', {hashkey: dir});
    assert.deepStrictEqual(recs.map(function (r) { return (r.value.name); }).sort(), ['f06', 'f18', 'obj1']);
    ok('findObjects on an array index, with NOT and a boolean');
    recs = await find(c, BUCKET, '(|(name=f03)(name=f05)(nested=*))', {hashkey: dir, no_count: true});
    assert.deepStrictEqual(recs.map(function (r) { return (r.key); }).sort(), [dir + '/f03', dir + '/f05', k1]);
    assert.ok(recs.every(function (r) { return (r._count === undefined); }));
    ok('findObjects with OR, presence of an unindexed field, no_count');
    await expectError('NotIndexedError', 'findObjects with requireIndexes on an unindexed field', function () {
        return (find(c, BUCKET, '(nested=*)', {hashkey: dir, requireIndexes: true}));
    });
    recs = await find(c, BUCKET, '(&(dirname=' + dir + ')(owner=bob))', {hashkey: dir, requireIndexes: true});
    assert.strictEqual(recs.length, 20);
    ok('findObjects with requireIndexes on indexed fields');
    await expectError('Error', 'findObjects without hashkey or token (electric-moray refuses it)', function () {
        return (find(c, BUCKET, '(name=f01)', {}));
    });
    await expectError('InvalidQueryError', 'findObjects with a malformed filter', function () {
        return (find(c, BUCKET, '(&(name=f01)', {hashkey: dir}));
    });
    /* As Moray: the value is parseFloat'd to NaN, which no row equals. */
    recs = await find(c, BUCKET, '(size>=abc)', {hashkey: dir});
    assert.strictEqual(recs.length, 0);
    ok('findObjects with a non-number for a number index finds nothing');

    /* getTokens: searching every shard by token finds each object once. */
    var tokens = (await p(function (cb) { c.getTokens(cb); })).tokens;
    assert.ok(Array.isArray(tokens) && tokens.length >= 2, 'tokens ' + JSON.stringify(tokens));
    var seen = {};
    for (var t = 0; t < tokens.length; t++) {
        (await find(c, BUCKET, '(owner=*)', {token: tokens[t]})).forEach(function (r) {
            assert.ok(!seen[r.key], r.key + ' found twice');
            seen[r.key] = tokens[t];
        });
    }
    assert.strictEqual(Object.keys(seen).length, 21);
    ok('getTokens lists ' + tokens.length + ' shards; findObjects by token finds all 21 objects once');
    await expectError('InvocationError', 'findObjects with an unknown token', function () {
        return (find(c, BUCKET, '(owner=*)', {token: 'tcp://nowhere:2020'}));
    });

    /* batch. */
    var res = await p(function (cb) {
        c.batch([
            {bucket: BUCKET, key: dir + '/b1', value: {dirname: dir, name: 'b1'}},
            {bucket: BUCKET, key: dir + '/b2', value: {dirname: dir, name: 'b2'}},
            {bucket: BUCKET, operation: 'delete', key: dir + '/f00'}
        ], cb);
    });
    // Moray lists every request, a delete without an etag.
    assert.strictEqual(res.etags.length, 3);
    assert.strictEqual(res.etags[0].key, dir + '/b1');
    assert.strictEqual(res.etags[2].key, dir + '/f00');
    assert.strictEqual(res.etags[2].etag, undefined);
    await p(function (cb) { c.getObject(BUCKET, dir + '/b2', cb); });
    await expectError('ObjectNotFoundError', 'getObject of a key the batch deleted', function () {
        return (p(function (cb) { c.getObject(BUCKET, dir + '/f00', cb); }));
    });
    ok('batch of two puts and a delete');
    await expectError('EtagConflictError', 'batch with one wrong etag', function () {
        return (p(function (cb) {
            c.batch([
                {bucket: BUCKET, key: dir + '/b3', value: {dirname: dir, name: 'b3'}},
                {bucket: BUCKET, key: dir + '/b1', value: {}, options: {etag: 'wrong'}}
            ], cb);
        }));
    });
    await expectError('ObjectNotFoundError', 'the failed batch left nothing behind', function () {
        return (p(function (cb) { c.getObject(BUCKET, dir + '/b3', cb); }));
    });
    await expectError('InvocationError', 'batch across directories', function () {
        return (p(function (cb) {
            c.batch([
                {bucket: BUCKET, key: dir + '/x', value: {}},
                {bucket: BUCKET, key: '/elsewhere/y', value: {}}
            ], cb);
        }));
    });

    /* The other CRC variant: a client using the correct CRC-16 (version 2). */
    var c2 = client(fast.FAST_CHECKSUM_V2);
    await new Promise(function (resolve) { c2.once('connect', resolve); });
    got = await p(function (cb) { c2.getObject(BUCKET, k1, cb); });
    assert.strictEqual(got.value.size, 6);
    var uni = dir + '/ünïcode-☃';
    await p(function (cb) { c2.putObject(BUCKET, uni, {dirname: dir, name: 'ü☃'}, cb); });
    got = await p(function (cb) { c.getObject(BUCKET, uni, cb); });
    assert.strictEqual(got.value.name, 'ü☃');
    ok('a client in CRC mode 2 and one in mode 1 read each other\'s non-ASCII writes');
    c2.close();

    /* Unknown and malformed RPCs, sent raw. */
    await expectError('FastError', 'an unknown RPC', function () { return (rawRPC('noSuchRPC', [])); });
    var err = await expectError('InvocationError', 'putObject with a number for the key', function () {
        return (rawRPC('putObject', [BUCKET, 42, {}, {}]));
    });
    assert.strictEqual(err.message, 'putObject expects "key" (args[1]) to be a nonempty string: key should be string');
    err = await expectError('InvocationError', 'putObject with a string value', function () {
        return (rawRPC('putObject', [BUCKET, 'k', 'v', {}]));
    });
    assert.strictEqual(err.message, 'putObject expects "value" (args[2]) to be an object: value should be object');
    await expectError('InvocationError', 'getObject without a key', function () {
        return (rawRPC('getObject', [BUCKET]));
    });
    await expectError('InvocationError', 'findObjects with a string limit that is not a number', function () {
        return (rawRPC('findObjects', [BUCKET, '(a=b)', {hashkey: 'x', limit: 'lots'}]));
    });

    await p(function (cb) { c.delBucket(BUCKET, cb); });
    await expectError('BucketNotFoundError', 'getBucket after delBucket', function () {
        return (p(function (cb) { c.getBucket(BUCKET, cb); }));
    });
    c.close();
    console.log(JSON.stringify({ok: true, checks: checks}));
}

main().catch(function (err) {
    console.log('not ok: ' + (err.stack || err));
    console.log(JSON.stringify({ok: false, checks: checks, error: String(err.message || err)}));
    process.exit(1);
});
