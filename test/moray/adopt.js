/*
 * Drives real Moray servers (and reshard's Moray port) with the npm moray
 * client for the adoption test. Usage:
 *   node adopt.js write SPEC ADDR   create SPEC.buckets and put SPEC.objects;
 *                                   objects marked batch go in one batch per
 *                                   run of them, as electric-moray forwards
 *                                   batches (values untouched)
 *   node adopt.js read SPEC         for each SPEC.reads[i] {bucket, key, addrs},
 *                                   getObject from every address; prints one
 *                                   JSON line per read: {bucket, key, answers}
 *                                   where an answer is {value, etag, id} with
 *                                   value.vnode removed (as electric-moray
 *                                   strips it), or {error: NAME}
 * Prints {"ok": true, ...} last.
 */
'use strict';

var fs = require('fs');
var bunyan = require('bunyan');
var moray = require('moray');

var mode = process.argv[2];
var spec = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));
var log = bunyan.createLogger({name: 'adopt', level: 'fatal'});
var clients = {};

function client(addr) {
    if (clients[addr]) {
        return (clients[addr]);
    }
    var c = moray.createClient({host: addr.split(':')[0],
        port: parseInt(addr.split(':')[1], 10), log: log, unwrapErrors: true});
    clients[addr] = new Promise(function (resolve, reject) {
        c.once('connect', function () { resolve(c); });
        c.once('error', reject);
    });
    return (clients[addr]);
}

function call(fn) {
    return (new Promise(function (resolve) {
        fn(function (err, res) { resolve({err: err, res: res}); });
    }));
}

function fail(msg) {
    console.error(msg);
    process.exit(1);
}

async function write(addr) {
    var c = await client(addr);
    var i, r;
    for (i = 0; i < spec.buckets.length; i++) {
        var b = spec.buckets[i];
        r = await call(function (cb) { c.createBucket(b.name, b.config, cb); });
        if (r.err) {
            fail('createBucket ' + b.name + ': ' + r.err.name + ': ' + r.err.message);
        }
    }
    var puts = 0, batches = 0;
    for (i = 0; i < spec.objects.length; ) {
        var o = spec.objects[i];
        if (!o.batch) {
            r = await call(function (cb) { c.putObject(o.bucket, o.key, o.value, {}, cb); });
            if (r.err) {
                fail('putObject ' + o.bucket + ' ' + o.key + ': ' + r.err.name + ': ' + r.err.message);
            }
            puts++;
            i++;
            continue;
        }
        var reqs = [];
        while (i < spec.objects.length && spec.objects[i].batch) {
            var p = spec.objects[i];
            reqs.push({bucket: p.bucket, key: p.key, value: p.value, operation: 'put'});
            i++;
        }
        r = await call(function (cb) { c.batch(reqs, {}, cb); });
        if (r.err) {
            fail('batch: ' + r.err.name + ': ' + r.err.message);
        }
        batches++;
        puts += reqs.length;
    }
    console.log(JSON.stringify({ok: true, puts: puts, batches: batches}));
}

async function read() {
    var n = 0;
    for (var i = 0; i < spec.reads.length; i++) {
        var rd = spec.reads[i];
        var answers = [];
        for (var j = 0; j < rd.addrs.length; j++) {
            var c = await client(rd.addrs[j]);
            var r = await call(function (cb) { c.getObject(rd.bucket, rd.key, {noCache: true}, cb); });
            if (r.err) {
                answers.push({error: r.err.name});
                continue;
            }
            var v = r.res.value;
            delete v.vnode;
            answers.push({value: JSON.stringify(v), etag: r.res._etag, id: r.res._id});
        }
        console.log(JSON.stringify({bucket: rd.bucket, key: rd.key, answers: answers}));
        n++;
    }
    console.log(JSON.stringify({ok: true, reads: n}));
}

var run = mode === 'write' ? write(process.argv[4]) : read();
run.then(function () {
    Object.keys(clients).forEach(function (a) {
        clients[a].then(function (c) { c.close(); });
    });
}, function (err) { fail(err.stack || String(err)); });
