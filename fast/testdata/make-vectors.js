/*
 * Produces vectors.jsonl by running the real node-fast 3.1.3 encoder
 * (lib/fast_protocol.js fastMessageEncode). fast depends on oldcrc through
 * a git URL that cannot be reached; package.json's override installs the
 * same code, node-crc 0.3.0, from the registry.
 *
 * Rerun (needs node and network access to the npm registry):
 *   cd fast/testdata
 *   npm install --ignore-scripts
 *   node make-vectors.js     # rewrites vectors.jsonl
 *
 * Each line: {"name", "version", "status", "msgid", "payload", "crc", "hex"}
 * where payload is the JSON text node-fast framed (JSON.stringify of
 * {m, d}), crc the header's CRC field and hex the whole frame.
 */
'use strict';
var fs = require('fs');
var path = require('path');
var proto = require('fast/lib/fast_protocol');

var UTS = 1700000000123456;
var big = 'x'.repeat(70000); /* length does not fit in 16 bits */

function data(name, d) {
    return {m: {uts: UTS, name: name}, d: d};
}

var cases = [
    ['ping', proto.FP_STATUS_DATA, 0, data('ping', [])],
    ['getObject', proto.FP_STATUS_DATA, 1, data('getObject',
        ['manta', '/poseidon/stor/foo.txt', {req_id: 'r-1', noCache: true}])],
    ['end', proto.FP_STATUS_END, 2, data('getObject', [])],
    ['record', proto.FP_STATUS_DATA, 12345, data('findObjects', [{
        bucket: 'manta', key: '/a/stor/b', value: {n: 1.5, ok: false,
        z: null}, _id: 7, _etag: 'ABC', _mtime: 1700000000000, _count: 3}])],
    ['error', proto.FP_STATUS_ERROR, 77, data('getObject', {
        name: 'ObjectNotFoundError', message: 'manta::/x does not exist',
        context: {bucket: 'manta'}})],
    ['max msgid', proto.FP_STATUS_DATA, proto.FP_MSGID_MAX, data('x', [1])],
    /* Non-ASCII: node-crc 0.3.0 hashes UTF-16 units' low bytes. */
    ['latin1', proto.FP_STATUS_DATA, 5, data('put', ['déjà vu', 'ÅÄÖ'])],
    ['cjk', proto.FP_STATUS_DATA, 6, data('put', ['日本語のキー'])],
    ['astral', proto.FP_STATUS_DATA, 7, data('put', ['emoji 🎉 key'])],
    ['separators', proto.FP_STATUS_DATA, 8, data('put',
        ['\u2028\u2029', 'tab\t"q"\\ <&>', '\u0000\u001f'])],
    ['large', proto.FP_STATUS_DATA, 9, data('put', [big])],
    ['empty name', proto.FP_STATUS_END, 10, {m: {uts: 0, name: ''}, d: []}]
];

var lines = [];
[proto.FP_VERSION_1, proto.FP_VERSION_2].forEach(function (version) {
    cases.forEach(function (c) {
        var frame = proto.fastMessageEncode({version: version, status: c[1],
            msgid: c[2], data: c[3]});
        lines.push(JSON.stringify({
            name: c[0] + ' v' + version,
            version: version,
            status: c[1],
            msgid: c[2],
            payload: JSON.stringify(c[3]),
            crc: frame.readUInt32BE(proto.FP_OFF_CRC),
            hex: frame.toString('hex')
        }));
    });
});
fs.writeFileSync(path.join(__dirname, 'vectors.jsonl'), lines.join('\n') + '\n');
console.log('wrote', lines.length, 'frames');
