/*
 * Sends one list of Moray requests to two servers, one request at a time to
 * each in turn, and records every answer. The caller (moray_diff_test.go)
 * compares the answers and the rows the two servers stored.
 *
 * Usage: node diff.js OPSFILE RESHARD_ADDR MORAY_ADDR
 *
 * RESHARD_ADDR is a reshard router's Moray port; MORAY_ADDR is a bare Moray
 * with no electric-moray in front of it, so this script does on that side
 * what electric-moray would: it sets value.vnode on putObject, and checks
 * that the key the caller hashed is the one electric-moray would hash.
 *
 * Prints one JSON document on stdout:
 *   {"results": [{"reshard": ANSWER, "moray": ANSWER}, ...], "transform": [...]}
 * with one result per op, where ANSWER is {"ok": true, "data": ...} or
 * {"ok": false, "name": ..., "message": ...}.
 */
'use strict';

var fs = require('fs');
var path = require('path');
var net = require('net');
var bunyan = require('bunyan');
var fast = require('fast');
var moray = require('moray');

var spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
var sides = {reshard: process.argv[3], moray: process.argv[4]};
var log = bunyan.createLogger({name: 'moray-diff', level: 'fatal'});

/* An etag no object has, for the "wrong etag" cases. */
var WRONG_ETAG = 'BADE7A60';

/*
 * electric-moray's key transforms (lib/schema/manta.js), written from its
 * documented behaviour with Node's own path.dirname, so that a Go port that
 * drifts from Node shows up here.
 */
var ROOT_RE = /^\/[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}\/stor$/;
function dirnameOrKey(key) {
    var d = ROOT_RE.test(key) ? key : path.dirname(key);
    return (d === '.' ? key : d);
}
function transformKey(bucket, key) {
    if (bucket === 'manta' || bucket === 'testmanta') {
        return (dirnameOrKey(key));
    }
    if (bucket === 'manta_uploads') {
        var i = key.indexOf(':');
        return (i < 0 ? key : dirnameOrKey(key.slice(i + 1)));
    }
    return (key);
}

/*
 * rawRPC sends one RPC with the fast client itself, so that arguments the
 * moray client would refuse reach the server. The answer is that of
 * call(): data is the list of records.
 */
function rawRPC(addr, method, args) {
    var i = addr.lastIndexOf(':');
    return (new Promise(function (resolve) {
        var sock = net.connect(parseInt(addr.slice(i + 1), 10), addr.slice(0, i));
        sock.once('error', function (err) {
            resolve({ok: false, name: err.name, message: err.message});
        });
        sock.on('connect', function () {
            var fc = new fast.FastClient({log: log, transport: sock, nRecentRequests: 1});
            var data = [];
            var req = fc.rpc({rpcmethod: method, rpcargs: args});
            req.on('data', function (d) { data.push(d); });
            req.once('end', function () {
                sock.destroy();
                resolve({ok: true, data: data});
            });
            req.once('error', function (err) {
                sock.destroy();
                while ((err.name === 'FastRequestError' || err.name === 'FastServerError') &&
                    typeof (err.cause) === 'function' && err.cause()) {
                    err = err.cause();
                }
                resolve({ok: false, name: err.name, message: err.message});
            });
        });
    }));
}

/*
 * What electric-moray 1.2.2 does with the RPCs that reach more than one
 * object, in front of the bare Moray, as read in its lib/server.js and
 * checked against the real tier (reference kit's tier.sh): its own
 * argument check first (typeof, with its own messages); sql is forwarded
 * to every shard by its Moray client, which rebuilds the options from
 * req_id, timeout and readOnlyOverride, and the shards' errors come back in
 * a verror MultiError; updateObjects and deleteMany are refused; other
 * RPCs it never registered (reindexObjects, listen, unlisten) get fast's
 * answer for an unknown method.
 */
var EM_ARGS = {
    sql: [['statement', 'string'], ['values', 'array'], ['options', 'object']],
    updateObjects: [['bucket', 'string'], ['fields', 'object'], ['filter', 'string'],
        ['options', 'object']],
    deleteMany: [['bucket', 'string'], ['filter', 'string'], ['options', 'object']]
};

function emInvalidArgs(method, argv) {
    var types = EM_ARGS[method];
    if (argv.length !== types.length) {
        return (method + ' expects ' + types.length + ' argument' +
            (types.length === 1 ? '' : 's'));
    }
    for (var i = 0; i < types.length; i++) {
        var name = types[i][0], type = types[i][1], val = argv[i];
        if (type === 'array') {
            if (!Array.isArray(val)) {
                return (method + ' expects "' + name + '" (args[' + i + ']) to be of type array but ' +
                    'received type ' + typeof (val) + ' instead');
            }
            continue;
        }
        if (type === 'object' && val === null) {
            return (method + ' expects "' + name + '" (args[' + i + ']) to be an object but ' +
                'received the value "null"');
        }
        if (typeof (val) !== type) {
            return (method + ' expects "' + name + '" (args[' + i + ']) to be of type ' + type +
                ' but received type ' + typeof (val) + ' instead');
        }
    }
    return (null);
}

/*
 * reshard is one logical Moray to its clients for these: they go to the
 * bare Moray as they are.
 */
var MORAY_RPCS = ['updateObjects', 'deleteMany', 'reindexObjects', 'unlisten'];

async function electricMoray(addr, method, args) {
    if (MORAY_RPCS.indexOf(method) !== -1) {
        return (rawRPC(addr, method, args));
    }
    if (!EM_ARGS[method]) {
        return {ok: false, name: 'FastError', message: 'unsupported RPC method: "' + method + '"'};
    }
    /*
     * reshard answers bad arguments with Moray's own checks (stricter than
     * electric-moray's typeof checks, and what Moray's test suite expects),
     * so what electric-moray would refuse goes to Moray as it is, which
     * refuses it too without running anything.
     */
    if (emInvalidArgs(method, args) !== null) {
        return (rawRPC(addr, method, args));
    }
    if (method !== 'sql') {
        return {ok: false, name: 'Error', message: 'Operation not supported'};
    }
    var o = args[2];
    var opts = {
        req_id: o.req_id || '6f1c9a2e-0d4b-4c8e-9a7f-3b2d1e0c5a48',
        timeout: o.timeout,
        readOnlyOverride: o.readOnlyOverride || false
    };
    var res = await rawRPC(addr, 'sql', [args[0], args[1], JSON.parse(JSON.stringify(opts))]);
    if (!res.ok) {
        /* One shard here: verror's MultiError of one. */
        res = {ok: false, name: 'MultiError', message: 'first of 1 error: ' + res.message};
    }
    return (res);
}

function connect(addr) {
    var i = addr.lastIndexOf(':');
    var c = moray.createClient({
        host: addr.slice(0, i), port: parseInt(addr.slice(i + 1), 10),
        log: log, unwrapErrors: true, failFast: true
    });
    return (new Promise(function (resolve, reject) {
        c.once('connect', function () { resolve(c); });
        c.once('error', reject);
    }));
}

function call(fn) {
    return (new Promise(function (resolve) {
        fn(function (err, res) {
            if (err) {
                resolve({ok: false, name: err.name, message: err.message});
            } else {
                resolve({ok: true, data: res === undefined ? null : res});
            }
        });
    }));
}

function find(c, bucket, filter, opts) {
    return (new Promise(function (resolve) {
        var recs = [];
        var req = c.findObjects(bucket, filter, opts);
        req.on('record', function (r) { recs.push(r); });
        req.once('error', function (err) {
            resolve({ok: false, name: err.name, message: err.message});
        });
        req.once('end', function () { resolve({ok: true, data: recs}); });
    }));
}

/*
 * A bare Fast client, for requests the moray client would refuse to send
 * (bad arguments): what the server says of them is what is compared.
 */
function connectRaw(addr) {
    var i = addr.lastIndexOf(':');
    return (new Promise(function (resolve, reject) {
        var s = net.connect(parseInt(addr.slice(i + 1), 10), addr.slice(0, i));
        s.once('connect', function () {
            resolve({
                socket: s,
                fc: new fast.FastClient({log: log, transport: s, nRecentRequests: 10})
            });
        });
        s.once('error', reject);
    }));
}

/* The error the server sent, under the client's wrappers. */
function serverError(err) {
    while (typeof (err.cause) === 'function' && err.cause()) {
        err = err.cause();
    }
    return (err);
}

function rawCall(fc, rpc, args) {
    return (new Promise(function (resolve) {
        var recs = [];
        var req = fc.rpc({rpcmethod: rpc, rpcargs: args});
        req.on('data', function (d) { recs.push(d); });
        req.once('error', function (err) {
            err = serverError(err);
            resolve({ok: false, name: err.name, message: err.message});
        });
        req.once('end', function () { resolve({ok: true, data: recs}); });
    }));
}

/* A bucket as getBucket parses it, made JSON: functions as their source. */
function plainBucket(b) {
    var o = {};
    Object.keys(b).forEach(function (k) {
        var v = b[k];
        if (k === 'pre' || k === 'post') {
            v = v.map(function (f) { return (String(f)); });
        } else if (v instanceof Date) {
            v = isNaN(v.getTime()) ? String(v) : v.getTime();
        }
        o[k] = v;
    });
    return (o);
}

function deepCopy(v) {
    return (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));
}

/*
 * Each side remembers the etags it handed out, so that "current" means the
 * etag this side would give a client that had just read the object.
 */
function Side(name, client, raw) {
    this.name = name;
    this.c = client;
    this.raw = raw;
    this.etags = {};
}

Side.prototype.etag = function (bucket, key, mode) {
    switch (mode) {
    case 'current':
        var e = this.etags[bucket + '\u0000' + key];
        return (e === undefined ? WRONG_ETAG : e);
    case 'wrong':
        return (WRONG_ETAG);
    case 'null':
        return (null);
    }
    return (undefined);
};

Side.prototype.learn = function (bucket, key, etag) {
    if (etag === undefined) {
        delete this.etags[bucket + '\u0000' + key];
    } else {
        this.etags[bucket + '\u0000' + key] = etag;
    }
};

Side.prototype.run = async function (op) {
    var self = this;
    var c = this.c;
    var em = this.name === 'moray';
    var opts, res;

    function withEtag(o, mode, bucket, key) {
        o = Object.assign({}, o || {});
        if (mode !== undefined) {
            o.etag = self.etag(bucket, key, mode);
        }
        return (o);
    }

    switch (op.op) {
    case 'createBucket':
        return (call(function (cb) {
            c.createBucket(op.bucket, deepCopy(op.config), op.options || {}, cb);
        }));
    case 'getBucket':
        res = await call(function (cb) { c.getBucket(op.bucket, cb); });
        if (res.ok) {
            res.data = plainBucket(res.data);
        }
        return (res);
    case 'put':
        var value = deepCopy(op.value);
        if (em) {
            /* electric-moray: v.vnode = node.vnode */
            value.vnode = op.vnode;
        }
        opts = withEtag(op.options, op.etag, op.bucket, op.key);
        res = await call(function (cb) { c.putObject(op.bucket, op.key, value, opts, cb); });
        if (res.ok) {
            self.learn(op.bucket, op.key, res.data.etag);
        }
        return (res);
    case 'get':
        res = await call(function (cb) { c.getObject(op.bucket, op.key, op.options || {}, cb); });
        if (res.ok) {
            self.learn(op.bucket, op.key, res.data._etag);
        } else if (res.name === 'ObjectNotFoundError') {
            self.learn(op.bucket, op.key, undefined);
        }
        return (res);
    case 'del':
        opts = withEtag(op.options, op.etag, op.bucket, op.key);
        res = await call(function (cb) { c.delObject(op.bucket, op.key, opts, cb); });
        if (res.ok) {
            self.learn(op.bucket, op.key, undefined);
        }
        return (res);
    case 'batch':
        var reqs = op.requests.map(function (r) {
            var q = {bucket: r.bucket, key: r.key, operation: r.operation};
            if (r.filter !== undefined) {
                q.filter = r.filter;
            }
            if (r.fields !== undefined) {
                q.fields = deepCopy(r.fields);
            }
            if (r.value !== undefined) {
                q.value = deepCopy(r.value);
                /*
                 * electric-moray's batch passes the requests through as
                 * they came: it sets no vnode on them.
                 */
                if (em && spec.batchVnode) {
                    q.value.vnode = r.vnode;
                }
            }
            q.options = withEtag(r.options, r.etag, r.bucket, r.key);
            return (q);
        });
        res = await call(function (cb) { c.batch(reqs, op.options || {}, cb); });
        if (res.ok) {
            op.requests.forEach(function (r) {
                if (r.operation === 'delete') {
                    self.learn(r.bucket, r.key, undefined);
                }
            });
            ((res.data && res.data.etags) || []).forEach(function (e) {
                if (e && e.key !== undefined && e.etag !== undefined) {
                    self.learn(e.bucket, e.key, e.etag);
                }
            });
        }
        return (res);
    case 'find':
        return (find(c, op.bucket, op.filter, Object.assign({}, op.options || {})));
    case 'raw':
        return (rawCall(this.raw.fc, op.method, op.args || []));
    case 'rpc':
        if (em) {
            return (electricMoray(sides.moray, op.method, op.args || []));
        }
        return (rawRPC(sides.reshard, op.method, op.args || []));
    }
    throw new Error('unknown op ' + op.op);
};

async function main() {
    var transform = [];
    spec.ops.forEach(function (op, i) {
        var all = op.op === 'batch' ? op.requests : [op];
        all.forEach(function (r) {
            if (r.hashKey === undefined) {
                return;
            }
            var t = transformKey(r.bucket, r.key);
            if (t !== r.hashKey) {
                transform.push({op: i, bucket: r.bucket, key: r.key, go: r.hashKey, node: t});
            }
        });
    });

    var clients = {};
    for (var name of Object.keys(sides)) {
        clients[name] = new Side(name, await connect(sides[name]),
            await connectRaw(sides[name]));
    }
    var results = [];
    for (var op of spec.ops) {
        var r = {};
        /* In turn, so that the two sides' mtimes stay close. */
        for (name of Object.keys(sides)) {
            r[name] = await clients[name].run(op);
        }
        results.push(r);
    }
    for (name of Object.keys(sides)) {
        clients[name].c.close();
        clients[name].raw.socket.destroy();
    }
    process.stdout.write(JSON.stringify({results: results, transform: transform}) + '\n');
}

main().catch(function (err) {
    console.error(err && err.stack || err);
    process.exit(1);
});
