/*
 * Manta's web tier, as muskie drives its metadata: the real libmanta
 * (npm libmanta@1.4.3) sets up the Manta buckets (manta with its post
 * trigger, recordDeleteLog) and installs the directory-count trigger
 * through the sql RPC, then several workers put, overwrite, read, list,
 * delete and finalize uploads the way muskie does, with the previous
 * metadata in x-muskie-prev-metadata so that libmanta's trigger logs what
 * the garbage collector must delete.
 *
 * Usage: node manta.js MORAY_ADDR SECONDS [STOPFILE]
 *
 * Runs for SECONDS, or until STOPFILE exists, then checks every key it
 * believes live and every directory count, and prints one JSON line:
 *   {ops, errors, errorSamples, stale, deleteLog: [objectId...],
 *    fastDelete: [objectId...], live: {key: objectId}, countMismatches}
 * where deleteLog and fastDelete are the objects libmanta's trigger must
 * have logged in manta_delete_log and manta_fastdelete_queue.
 */
'use strict';

var crypto = require('crypto');
var fs = require('fs');
var path = require('path');
var bunyan = require('bunyan');
var libmanta = require('libmanta');

var addr = process.argv[2];
var seconds = parseFloat(process.argv[3] || '10');
var stopFile = process.argv[4];
var log = bunyan.createLogger({name: 'manta-flow', level: 'fatal'});

var WORKERS = 4;
var DIRS = 6;
var NAMES = 8;
var ACCOUNT = crypto.randomUUID();
var STOR = '/' + ACCOUNT + '/stor';

var stats = {ops: {}, errors: 0, errorSamples: [], stale: 0, staleSamples: []};
var deleteLog = [];
var fastDelete = [];
var live = {};          /* key -> metadata as last written */
var entries = {};       /* directory -> number of entries in it */

function count(op) { stats.ops[op] = (stats.ops[op] || 0) + 1; }

function fail(op, key, err) {
    stats.errors++;
    if (stats.errorSamples.length < 20) {
        stats.errorSamples.push(op + ' ' + key + ': ' + (err.name || 'Error') + ': ' + err.message);
    }
}

function stale(what) {
    stats.stale++;
    if (stats.staleSamples.length < 20) {
        stats.staleSamples.push(what);
    }
}

function reqId() { return (crypto.randomUUID()); }

function p(fn) {
    return (new Promise(function (resolve, reject) {
        fn(function (err, a, b) {
            if (err) {
                reject(err);
            } else {
                resolve([a, b]);
            }
        });
    }));
}

function dirOf(key) { return (path.dirname(key)); }

function objectOpts(key, objectId) {
    return {
        key: key,
        owner: ACCOUNT,
        type: 'object',
        objectId: objectId,
        contentLength: 1024,
        contentMD5: crypto.createHash('md5').update(objectId).digest('base64'),
        contentType: 'application/octet-stream',
        sharks: [ {datacenter: 'dc1', manta_storage_id: '1.stor.test'},
            {datacenter: 'dc1', manta_storage_id: '2.stor.test'} ],
        requestId: reqId()
    };
}

async function putObject(m, key) {
    var prev = live[key];
    var o = objectOpts(key, crypto.randomUUID());
    o.previousMetadata = prev;
    count(prev ? 'overwrite' : 'put');
    try {
        var r = await p(function (cb) { m.putMetadata(o, cb); });
        if (prev && prev.objectId && prev.objectId !== o.objectId) {
            deleteLog.push(prev.objectId);
        }
        if (!prev) {
            entries[dirOf(key)] = (entries[dirOf(key)] || 0) + 1;
        }
        live[key] = r[0];
    } catch (err) {
        fail('putMetadata', key, err);
    }
}

async function delObject(m, key, snaplinksDisabled) {
    var prev = live[key];
    count(snaplinksDisabled ? 'delete-fast' : 'delete');
    try {
        await p(function (cb) {
            m.delMetadata({key: key, requestId: reqId(), previousMetadata: prev,
                snapLinksDisabled: snaplinksDisabled}, cb);
        });
        (snaplinksDisabled ? fastDelete : deleteLog).push(prev.objectId);
        entries[dirOf(key)]--;
        delete live[key];
    } catch (err) {
        fail('delMetadata', key, err);
    }
}

async function getObject(m, key) {
    count('get');
    try {
        var r = await p(function (cb) { m.getMetadata({key: key, requestId: reqId()}, cb); });
        if (r[0].objectId !== live[key].objectId) {
            stale('get ' + key + ': objectId ' + r[0].objectId + ', wrote ' + live[key].objectId);
        }
    } catch (err) {
        fail('getMetadata', key, err);
    }
}

/*
 * muskie's directory listing: a find by dirname, hashed by the directory.
 * While other workers write the same directory, only the listing worker's
 * own entries (prefix "wN-") can be checked; at the end, all of them.
 */
async function list(m, dir, prefix) {
    count('list');
    function mine(k) { return (prefix === undefined || path.basename(k).indexOf(prefix) === 0); }
    var want = Object.keys(live).filter(function (k) { return (dirOf(k) === dir && mine(k)); }).sort();
    var got = [];
    try {
        await new Promise(function (resolve, reject) {
            var req = m.search({filter: '(dirname=' + dir + ')', requestId: reqId(), hashkey: dir,
                sort: {attribute: 'name', order: 'ASC'}, limit: 1000});
            req.on('record', function (r) {
                if (mine(r.key)) {
                    got.push(r.key);
                }
            });
            req.once('error', reject);
            req.once('end', resolve);
        });
        got.sort();
        if (JSON.stringify(got) !== JSON.stringify(want)) {
            stale('list ' + dir + ': ' + got.length + ' entries, expected ' + want.length);
        }
    } catch (err) {
        fail('search', dir, err);
    }
}

/* An aborted multipart upload: the finalizing record in manta_uploads. */
async function finalizeUpload(m, key) {
    count('upload-abort');
    var id = crypto.randomUUID();
    var md = {uploadId: id, finalizingType: 'abort', owner: ACCOUNT, requestId: reqId(),
        objectPath: key, objectId: crypto.randomUUID()};
    try {
        await p(function (cb) {
            m.putFinalizingMetadata({key: id + ':' + STOR + '/uploads/' + id.slice(0, 1) + '/' + id, md: md}, cb);
        });
    } catch (err) {
        fail('putFinalizingMetadata', key, err);
    }
}

async function mkdir(m, dir) {
    count('mkdir');
    try {
        var o = {key: dir, owner: ACCOUNT, type: 'directory', requestId: reqId(), previousMetadata: live[dir]};
        var r = await p(function (cb) { m.putMetadata(o, cb); });
        if (!live[dir]) {
            entries[dirOf(dir)] = (entries[dirOf(dir)] || 0) + 1;
        }
        live[dir] = r[0];
    } catch (err) {
        fail('putMetadata', dir, err);
    }
}

function stopped(deadline) {
    return (Date.now() > deadline || (stopFile && fs.existsSync(stopFile)));
}

async function worker(m, w, deadline) {
    while (!stopped(deadline)) {
        var dir = STOR + '/d' + Math.floor(Math.random() * DIRS);
        var key = dir + '/w' + w + '-' + Math.floor(Math.random() * NAMES);
        var r = Math.random();
        if (!live[key]) {
            await putObject(m, key);
        } else if (r < 0.30) {
            await putObject(m, key);
        } else if (r < 0.45) {
            await delObject(m, key, Math.random() < 0.25);
        } else if (r < 0.70) {
            await getObject(m, key);
        } else if (r < 0.85) {
            await list(m, dir, 'w' + w + '-');
        } else {
            await finalizeUpload(m, key);
        }
    }
}

async function main() {
    var i = addr.lastIndexOf(':');
    var m = libmanta.createMorayClient({host: addr.slice(0, i), port: parseInt(addr.slice(i + 1), 10),
        log: log, retry: {retries: 0}});
    await new Promise(function (resolve, reject) {
        var t = setTimeout(function () { reject(new Error('libmanta setup did not finish in 60 s')); }, 60000);
        m.once('connect', function () { clearTimeout(t); resolve(); });
    });
    for (var d = 0; d < DIRS; d++) {
        await mkdir(m, STOR + '/d' + d);
    }
    var deadline = Date.now() + seconds * 1000;
    var ws = [];
    for (var w = 0; w < WORKERS; w++) {
        ws.push(worker(m, w, deadline));
    }
    await Promise.all(ws);

    /* Everything as it stands: each live key, each listing, each count. */
    for (var key of Object.keys(live)) {
        await getObject(m, key);
    }
    var mismatches = [];
    for (var dir of Object.keys(entries)) {
        if (dir !== path.dirname(STOR)) {
            await list(m, dir);
        }
        try {
            var r = await p(function (cb) { m.getDirectoryCount({directory: dir, requestId: reqId()}, cb); });
            if (r[0] !== entries[dir]) {
                mismatches.push(dir + ': count ' + r[0] + ', entries ' + entries[dir]);
            }
        } catch (err) {
            if (!(err.name === 'ObjectNotFoundError' && entries[dir] === 0)) {
                mismatches.push(dir + ': ' + err.name + ': ' + err.message);
            }
        }
    }
    var liveIds = {};
    Object.keys(live).forEach(function (k) { liveIds[k] = live[k].objectId || null; });
    process.stdout.write(JSON.stringify({
        ops: stats.ops, errors: stats.errors, errorSamples: stats.errorSamples,
        stale: stats.stale, staleSamples: stats.staleSamples,
        deleteLog: deleteLog, fastDelete: fastDelete, live: liveIds,
        countMismatches: mismatches
    }) + '\n');
    m.close();
}

main().catch(function (err) {
    console.error(err && err.stack || err);
    process.exit(1);
});
