/*
 * Produces the test vectors in ../ by running the real node-fash 3.0.1.
 *
 * Rerun (needs node and network access to the npm registry):
 *   cd ring/testdata/fash
 *   npm install --ignore-scripts && npm rebuild bignum
 *   node make-vectors.js
 *
 * For each ring NAME it writes
 *   ../NAME.fash.json   the ring as fash serialize() prints it
 *   ../NAME.vectors     one JSON line per key: {"key","vnode","pnode","data"}
 *                       exactly as fash getNode() answers
 * Keys are deterministic, so rerunning gives identical files.
 */
'use strict';
var fs = require('fs');
var path = require('path');
var fash = require('fash');

var OUT = path.join(__dirname, '..');

function write(name, ring, keys) {
    fs.writeFileSync(path.join(OUT, name + '.fash.json'), ring.serialize());
    var lines = keys.map(function (k) {
        var n = ring.getNode(k);
        return JSON.stringify({key: k, vnode: n.vnode, pnode: n.pnode,
            data: n.data});
    });
    fs.writeFileSync(path.join(OUT, name + '.vectors'), lines.join('\n') + '\n');
    console.log('wrote', name, keys.length, 'keys');
}

function create(algorithm, vnodes, pnodes) {
    return fash.create({
        algorithm: algorithm,
        vnodes: vnodes,
        pnodes: pnodes,
        backend: fash.BACKEND.IN_MEMORY
    });
}

var keys = require('./keys.js')();
var SHARDS = [
    'tcp://2.moray.emy-11.joyent.us:2020',
    'tcp://1.moray.emy-11.joyent.us:2020',
    'tcp://10.moray.emy-11.joyent.us:2020'
];

/* Plain rings, one per algorithm; pnodes given unsorted on purpose. */
write('sha256', create('sha256', 1000, SHARDS), keys);
write('md5', create('md5', 97, SHARDS.slice(0, 2)), keys);
write('sha1', create('sha1', 4096, SHARDS.concat(['a', 'Z'])), keys);
/* vnode counts that divide MAX exactly and that do not. */
write('sha256-3', create('sha256', 3, ['b', 'a']), keys);
write('md5-7', create('md5', 7, ['only']), keys);

/*
 * The RFD 103 flow: mark vnodes read-only, remap some of them (their data
 * travels with them) to a new pnode, and store data values other than 'ro'.
 */
var r = create('sha256', 1024, SHARDS);
var VNODES = [0, 106, 943, 689];
VNODES.forEach(function (v) { r.addData(v, 'ro'); });
r.addData(5, 'ro');
r.remapVnode('tcp://3.moray.emy-11.joyent.us:2020', VNODES);
r.remapVnode('tcp://3.moray.emy-11.joyent.us:2020', [1, 2, 3]);
r.addData(7, {state: 'moving', to: 'tcp://3.moray.emy-11.joyent.us:2020'});
r.addData(8, 2);
r.addData(9, 'blue');
r.addData(10, [1, 'two', null]);
r.addData(5, 'ro');
r.addData(106, null); /* fash resets falsy data to 1 */
write('sha256-remapped', r, keys);

/* Deserialize round trip: fash reading its own output answers the same. */
var again = fash.deserialize({
    topology: r.serialize(),
    backend: fash.BACKEND.IN_MEMORY
});
keys.forEach(function (k) {
    var a = r.getNode(k), b = again.getNode(k);
    if (a.vnode !== b.vnode || a.pnode !== b.pnode ||
        JSON.stringify(a.data) !== JSON.stringify(b.data)) {
        throw new Error('fash deserialize changed ' + k);
    }
});
