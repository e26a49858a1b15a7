/*
 * Produces LevelDB ring fixtures in ../ by running the real node-fash 3.0.1
 * leveldb backend (lib/backend/leveldb.js) on an in-memory stand-in for the
 * `level` module: leveldown does not build on current Node, but the keys and
 * values are decided entirely by leveldb.js, so recording its puts, batches
 * and deletes gives the exact layout electric-moray's LevelDB holds.
 *
 * Rerun (needs node and network access to the npm registry):
 *   cd ring/testdata/fash
 *   npm install --ignore-scripts && npm rebuild bignum
 *   node make-leveldb-vectors.js
 *
 * For each ring NAME it writes
 *   ../NAME.leveldb.jsonl.gz  every LevelDB record as a JSON line
 *                             [key, value-as-stored], sorted by key
 *   ../NAME.fash.json         the same operations on node-fash's in-memory
 *                             backend, as serialize() prints them
 *   ../NAME.vectors           getNode() answers of the in-memory backend
 * and checks that the leveldb backend's own getNode() agrees on every key.
 */
'use strict';
var fs = require('fs');
var path = require('path');
var zlib = require('zlib');

var OUT = path.join(__dirname, '..');

/*
 * The stand-in for require('level'): levelup's get/put/del/batch with
 * fash's keyEncoding utf8 and valueEncoding json. Values are encoded when
 * the call is made, as levelup does, and callbacks run asynchronously.
 */
var stores = {};
function fakeLevel(location, cfg, cb) {
    if (cfg.keyEncoding !== 'utf8' || cfg.valueEncoding !== 'json') {
        throw new Error('fash asked for encodings ' + cfg.keyEncoding +
            '/' + cfg.valueEncoding);
    }
    var s = stores[location] || (stores[location] = new Map());
    function apply(ops) {
        ops.forEach(function (op) {
            if (op[0] === 'put') {
                s.set(op[1], op[2]);
            } else {
                s.delete(op[1]);
            }
        });
    }
    var db = {
        get: function (k, cb2) {
            k = String(k);
            setImmediate(function () {
                if (!s.has(k)) {
                    var e = new Error('Key not found in database [' + k + ']');
                    e.name = 'NotFoundError';
                    e.notFound = true;
                    return cb2(e);
                }
                return cb2(null, JSON.parse(s.get(k)));
            });
        },
        put: function (k, v, cb2) {
            var ops = [['put', String(k), JSON.stringify(v)]];
            setImmediate(function () { apply(ops); if (cb2) cb2(null); });
        },
        del: function (k, cb2) {
            var ops = [['del', String(k)]];
            setImmediate(function () { apply(ops); if (cb2) cb2(null); });
        },
        batch: function () {
            var ops = [];
            var b = {
                put: function (k, v) {
                    ops.push(['put', String(k), JSON.stringify(v)]);
                    return b;
                },
                del: function (k) { ops.push(['del', String(k)]); return b; },
                write: function (cb2) {
                    setImmediate(function () { apply(ops); cb2(null); });
                }
            };
            return b;
        }
    };
    setImmediate(function () { cb(null, db); });
}
var levelPath = require.resolve('level', {
    paths: [path.dirname(require.resolve('fash/lib/backend/leveldb.js'))]
});
require.cache[levelPath] = {
    id: levelPath, filename: levelPath, loaded: true, exports: fakeLevel
};

var fash = require('fash');
var keys = require('./keys.js')();

function dump(name, location) {
    var s = stores[location];
    var ks = Array.from(s.keys()).sort(function (a, b) {
        return Buffer.compare(Buffer.from(a), Buffer.from(b));
    });
    var lines = ks.map(function (k) { return JSON.stringify([k, s.get(k)]); });
    fs.writeFileSync(path.join(OUT, name + '.leveldb.jsonl.gz'),
        zlib.gzipSync(lines.join('\n') + '\n', {level: 9}));
}

/* Runs fns (each f(cb)) one after the other. */
function series(fns, cb) {
    var i = 0;
    (function next(err) {
        if (err || i === fns.length) {
            return cb(err);
        }
        return fns[i++](next);
    })();
}

/*
 * ops are [op, args...] applied to both backends:
 *   ['remap', pnode, [vnodes]]  ['data', [vnodes], string]  ['rmpnode', p]
 */
function applyOps(mem, ldb, ops, cb) {
    var steps = [];
    ops.forEach(function (op) {
        if (op[0] === 'remap') {
            mem.remapVnode(op[1], op[2]);
            op[2].forEach(function (v) {
                steps.push(function (cb2) { ldb.remapVnode(op[1], v, cb2); });
            });
        } else if (op[0] === 'data') {
            op[1].forEach(function (v) {
                mem.addData(v, op[2]);
                steps.push(function (cb2) { ldb.addData(v, op[2], cb2); });
            });
        } else if (op[0] === 'rmpnode') {
            mem.removePnode(op[1]);
            steps.push(function (cb2) { ldb.removePnode(op[1], cb2); });
        } else {
            throw new Error('unknown op ' + op[0]);
        }
    });
    series(steps, cb);
}

function finish(name, location, mem, ldb, cb) {
    dump(name, location);
    fs.writeFileSync(path.join(OUT, name + '.fash.json'), mem.serialize());
    var lines = [];
    series(keys.map(function (k) {
        return function (cb2) {
            var want = mem.getNode(k);
            ldb.getNode(k, function (err, got) {
                if (err) {
                    return cb2(err);
                }
                if (got.vnode !== want.vnode || got.pnode !== want.pnode ||
                    JSON.stringify(got.data) !== JSON.stringify(want.data)) {
                    return cb2(new Error(name + ': backends differ on ' +
                        JSON.stringify(k) + ': ' + JSON.stringify(got) +
                        ' vs ' + JSON.stringify(want)));
                }
                lines.push(JSON.stringify({key: k, vnode: want.vnode,
                    pnode: want.pnode, data: want.data}));
                return cb2();
            });
        };
    }), function (err) {
        if (err) {
            return cb(err);
        }
        fs.writeFileSync(path.join(OUT, name + '.vectors'),
            lines.join('\n') + '\n');
        console.log('wrote', name, stores[location].size, 'records',
            keys.length, 'keys');
        return cb();
    });
}

/* A ring made by fash create (leveldb.js createNewRing), then changed. */
function created(name, algorithm, vnodes, pnodes, ops) {
    return function (cb) {
        var location = '/fake/' + name;
        var mem = fash.create({algorithm: algorithm, vnodes: vnodes,
            pnodes: pnodes.slice(), backend: fash.BACKEND.IN_MEMORY});
        fash.create({algorithm: algorithm, vnodes: vnodes,
            pnodes: pnodes.slice(), backend: fash.BACKEND.LEVEL_DB,
            location: location}, function (err, ldb) {
            if (err) {
                return cb(err);
            }
            return applyOps(mem, ldb, ops, function (err2) {
                if (err2) {
                    return cb(err2);
                }
                return finish(name, location, mem, ldb, cb);
            });
        });
    };
}

/* A ring made by fash deserialize (leveldb.js deserialize), then changed. */
function deserialized(name, topology, ops) {
    return function (cb) {
        var location = '/fake/' + name;
        var mem = fash.deserialize({topology: topology,
            backend: fash.BACKEND.IN_MEMORY});
        fash.deserialize({topology: topology, backend: fash.BACKEND.LEVEL_DB,
            location: location}, function (err, ldb) {
            if (err) {
                return cb(err);
            }
            return applyOps(mem, ldb, ops, function (err2) {
                if (err2) {
                    return cb(err2);
                }
                return finish(name, location, mem, ldb, cb);
            });
        });
    };
}

function range(from, to, step) {
    var out = [];
    for (var v = from; v < to; v += step) {
        out.push(v);
    }
    return out;
}

var S = function (n) { return 'tcp://' + n + '.moray.emy-11.joyent.us:2020'; };
var RFD = [0, 106, 943, 689];

series([
    /* Every vnode of one pnode moves away and the pnode is removed. */
    created('ldb-sha256-10', 'sha256', 10, [S(2), S(1), S(10)], [
        ['data', [0, 4], 'ro'],
        ['remap', S(3), [1, 4, 7]],
        ['rmpnode', S(10)],
        ['data', [9], 'blue'],
        ['data', [0], '']
    ]),
    /* RFD 103: read-only, remap, clear read-only; more data values. */
    created('ldb-md5-1024', 'md5', 1024, [S(1), S(2), S(10)], [
        ['data', RFD, 'ro'],
        ['remap', S(3), RFD],
        ['data', RFD, ''],
        ['data', [5, 6], 'ro'],
        ['data', [1000], 'blue'],
        ['remap', S(4), [1, 2, 3, 6]]
    ]),
    created('ldb-sha1-100000', 'sha1', 100000, [S(1), S(2), S(3), S(4)], [
        ['data', range(0, 100000, 997), 'ro'],
        ['remap', S(5), range(0, 100000, 97)],
        ['data', range(50000, 50010, 1), 'ro'],
        ['data', [99999], 'blue']
    ]),
    /* A topology import: data of every JSON type, then a change. */
    deserialized('ldb-sha256-deser', fs.readFileSync(
        path.join(OUT, 'sha256-remapped.fash.json'), 'utf8'), [
        ['remap', S(1), [0]],
        ['data', [11], 'ro']
    ])
], function (err) {
    if (err) {
        console.error(err.stack || err);
        process.exit(1);
    }
});
