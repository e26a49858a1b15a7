/*
 * Sends one kind of request as fast as it is answered, with the real npm
 * moray client, to a Moray (reshard's router's Moray port or the real
 * Moray), and prints what it measured as one JSON line. `reshard bench
 * compare` runs it against both, in alternating rounds. Usage:
 *   node bench.js HOST:PORT BUCKET OP SECONDS CONCURRENCY KEYS
 * OP is setup (create the bucket if missing and put every key once), put,
 * get or find (findObjects by an indexed number, one object each, with
 * the object's key as hashkey).
 */
'use strict';

var bunyan = require('bunyan');
var moray = require('moray');

var addr = process.argv[2];
var bucket = process.argv[3];
var op = process.argv[4];
var seconds = parseFloat(process.argv[5] || '3');
var concurrency = parseInt(process.argv[6] || '16', 10);
var keys = parseInt(process.argv[7] || '5000', 10);
var log = bunyan.createLogger({name: 'bench', level: 'fatal'});
var config = {index: {n: {type: 'number'}}};

var c = moray.createClient({host: addr.split(':')[0], port: parseInt(addr.split(':')[1], 10),
    log: log, unwrapErrors: true});

function value(i) {
    return {n: i, size: 1024, owner: '5884dd74-949a-40ec-8d13-dd3151897343', type: 'object'};
}

function key(i) { return 'k' + i; }

var requests = {
    put: function (i, cb) { c.putObject(bucket, key(i), value(i), {}, cb); },
    get: function (i, cb) { c.getObject(bucket, key(i), {}, cb); },
    find: function (i, cb) {
        // hashkey routes the find to one shard, as electric-moray needs.
        var req = c.findObjects(bucket, '(n=' + i + ')', {hashkey: key(i)});
        var n = 0;
        req.on('record', function () { n++; });
        req.once('error', cb);
        req.once('end', function () {
            cb(n === 1 ? null : new Error('findObjects (n=' + i + ') returned ' + n + ' objects'));
        });
    }
};

function setup(done) {
    c.getBucket(bucket, function (err) {
        if (err && err.name !== 'BucketNotFoundError') { return done(err); }
        var create = err ? c.createBucket.bind(c, bucket, config) : function (cb) { cb(); };
        create(function (err2) {
            if (err2) { return done(err2); }
            var next = 0, running = 0, failed = null;
            function more() {
                while (running < concurrency && next < keys && !failed) {
                    running++;
                    requests.put(next++, function (err3) {
                        running--;
                        if (err3 && !failed) { failed = err3; }
                        if (running === 0 && (next >= keys || failed)) { return done(failed); }
                        more();
                    });
                }
            }
            more();
        });
    });
}

function run(done) {
    var lat = [], errors = 0, first = null, stop = false, running = 0, i = 0;
    var start = process.hrtime.bigint();
    setTimeout(function () { stop = true; }, seconds * 1000);
    function worker() {
        if (stop) {
            if (--running === 0) { finish(); }
            return;
        }
        var t0 = process.hrtime.bigint();
        requests[op](i++ % keys, function (err) {
            if (err) {
                errors++;
                if (!first) { first = err.name + ': ' + err.message; }
            } else {
                lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
            }
            setImmediate(worker);
        });
    }
    function finish() {
        var secs = Number(process.hrtime.bigint() - start) / 1e9;
        lat.sort(function (a, b) { return a - b; });
        function q(p) { return lat.length ? lat[Math.min(lat.length - 1, Math.max(0, Math.round(p * lat.length) - 1))] : 0; }
        done({ops: lat.length, seconds: secs, ops_per_s: lat.length / secs, p50_ms: q(0.5), p99_ms: q(0.99),
            errors: errors, first_error: first || undefined});
    }
    for (running = 0; running < concurrency; running++) { worker(); }
}

c.once('error', function (err) { console.error('connect: ' + err.message); process.exit(2); });
c.once('connect', function () {
    if (op === 'setup') {
        setup(function (err) {
            if (err) { console.error('setup: ' + err.name + ': ' + err.message); process.exit(1); }
            console.log(JSON.stringify({ok: true}));
            c.close();
        });
        return;
    }
    if (!requests[op]) { console.error('unknown op ' + op); process.exit(2); }
    run(function (res) {
        console.log(JSON.stringify(res));
        c.close();
    });
});
