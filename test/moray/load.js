/*
 * Writes through a reshard router's Moray port with the real npm moray
 * client for a while, and records every acknowledged write in a ledger
 * that `reshard verify` checks. Usage:
 *   node load.js HOST:PORT LEDGER SECONDS [CONCURRENCY [LABEL]]
 * Each worker writes only its own directories, so the ledger's order of
 * acknowledgements is the order of commits for every key.
 * Stops early on SIGTERM. Prints a JSON summary last.
 */
'use strict';

var fs = require('fs');
var bunyan = require('bunyan');
var moray = require('moray');

var addr = process.argv[2];
var ledgerPath = process.argv[3];
var seconds = parseFloat(process.argv[4] || '10');
var concurrency = parseInt(process.argv[5] || '8', 10);
var label = process.argv[6] || 'a';
var BUCKET = 'manta';
var ACCOUNT = '/0b9b5a80-1d5b-4c8e-9d55-1f0c3e2a7d11/stor';
var log = bunyan.createLogger({name: 'load', level: 'fatal'});
var ledger = fs.openSync(ledgerPath, 'a');
var stop = false;
var sum = {puts: 0, deletes: 0, gets: 0, finds: 0, errors: 0, unknown: 0, error_names: {}};

process.on('SIGTERM', function () { stop = true; });
setTimeout(function () { stop = true; }, seconds * 1000);

var c = moray.createClient({host: addr.split(':')[0], port: parseInt(addr.split(':')[1], 10),
    log: log, unwrapErrors: true});

function call(fn) {
    return (new Promise(function (resolve) {
        fn(function (err, res) { resolve({err: err, res: res}); });
    }));
}

function record(op, key, etag, status) {
    var e = {t: Date.now() * 1e6, op: op, bucket: BUCKET, key: key, status: status};
    if (etag) { e.etag = etag; }
    fs.writeSync(ledger, JSON.stringify(e) + '\n');
}

function failed(op, key, err) {
    sum.errors++;
    sum.error_names[err.name] = (sum.error_names[err.name] || 0) + 1;
    if (sum.errors <= 5) {
        console.error(op + ' ' + key + ': ' + err.name + ': ' + err.message);
    }
    /* A write whose outcome is unknown may or may not have happened. */
    if (op !== 'get' && op !== 'find') {
        sum.unknown++;
        record(op, key, '', 'unknown');
    }
}

async function worker(w) {
    var n = 0;
    while (!stop) {
        n++;
        var dir = ACCOUNT + '/' + label + w + '/d' + Math.floor(Math.random() * 25);
        var key = dir + '/o' + Math.floor(Math.random() * 20);
        var r = Math.random();
        var res;
        if (r < 0.75) {
            var value = {dirname: dir, w: w, n: n, t: Date.now()};
            res = await call(function (cb) { c.putObject(BUCKET, key, value, cb); });
            if (res.err) { failed('put', key, res.err); continue; }
            sum.puts++;
            record('put', key, res.res.etag, 'ok');
        } else if (r < 0.85) {
            res = await call(function (cb) { c.delObject(BUCKET, key, cb); });
            if (res.err && res.err.name !== 'ObjectNotFoundError') { failed('delete', key, res.err); continue; }
            sum.deletes++;
            record('delete', key, '', 'ok');
        } else if (r < 0.95) {
            res = await call(function (cb) { c.getObject(BUCKET, key, cb); });
            if (res.err && res.err.name !== 'ObjectNotFoundError') { failed('get', key, res.err); continue; }
            sum.gets++;
        } else {
            res = await new Promise(function (resolve) {
                var req = c.findObjects(BUCKET, '(dirname=' + dir + ')', {hashkey: dir, limit: 50});
                req.on('record', function () {});
                req.once('error', function (err) { resolve({err: err}); });
                req.once('end', function () { resolve({}); });
            });
            if (res.err) { failed('find', key, res.err); continue; }
            sum.finds++;
        }
    }
}

c.once('connect', async function () {
    var made = await call(function (cb) {
        c.putBucket(BUCKET, {index: {dirname: {type: 'string'}}}, cb);
    });
    // A bucket that exists at a newer version (Manta's own "manta", say)
    // is left as it is: Moray refuses to take it back to version 0.
    if (made.err && made.err.name !== 'BucketVersionError') {
        console.error('putBucket ' + BUCKET + ': ' + made.err.message);
        process.exit(1);
    }
    var ws = [];
    for (var i = 0; i < concurrency; i++) { ws.push(worker(i)); }
    await Promise.all(ws);
    fs.closeSync(ledger);
    c.close();
    console.log(JSON.stringify(sum));
    process.exit(0);
});
