'use strict';
// The oracle for shard/value_test.go's differential test: what Node does to
// a value on its way into Moray and back out through electric-moray.
//
// Usage: node value.js FILE
//
// Each line of FILE is "BASE64 VNODE": the raw bytes of a client's value
// (base64, so that ill-formed UTF-8 reaches Buffer#toString as it would off
// the wire) and the vnode electric-moray assigns, or "-" for none. Each line
// printed is "ERR" when Node refuses the value, or
// "STORED ETAG CLIENT VNODECOL RAWCLIENT RAWVNODECOL": the _value text and
// what a client reads back (both base64 of their UTF-8), Moray's etag of the
// text, and what a number index on vnode would store (parseInt(String(v),
// 10)), or "-"; then the last two for the client's text itself, as if it had
// been stored as it came (its repeated keys and spelling are not canonical).

const fs = require('fs');

// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) over the low byte of
// each UTF-16 code unit, which is what Moray's crc module hashes.
const TABLE = new Uint32Array(256);
for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++)
        c = (c & 1) ? (0xEDB88320 ^ (c >>> 1)) : (c >>> 1);
    TABLE[n] = c;
}

function etag(s) {
    let c = 0xFFFFFFFF;
    for (let i = 0; i < s.length; i++)
        c = TABLE[(c ^ s.charCodeAt(i)) & 0xFF] ^ (c >>> 8);
    return ((c ^ 0xFFFFFFFF) >>> 0).toString(16).toUpperCase().padStart(8, '0');
}

function b64(s) {
    return Buffer.from(s, 'utf8').toString('base64');
}

// readBack is electric-moray's read of a stored text: the client's value and
// the vnode index column.
function readBack(text) {
    const back = JSON.parse(text);
    const sv = back.vnode;
    delete back.vnode;
    let col = '-';
    if (typeof sv === 'number') {
        const n = parseInt(String(sv), 10);
        if (!Number.isNaN(n))
            col = String(n);
    }
    return [b64(JSON.stringify(back)), col];
}

function one(line) {
    const [raw, vn] = line.split(' ');
    const text = Buffer.from(raw, 'base64').toString('utf8');
    let stored;
    try {
        const v = JSON.parse(text);
        if (v === null || typeof v !== 'object' || Array.isArray(v))
            return 'ERR';
        if (vn !== '-')
            v.vnode = Number(vn);
        stored = JSON.stringify(v);
    } catch (e) {
        return 'ERR';
    }
    const [client, col] = readBack(stored);
    const [rawClient, rawCol] = readBack(text);
    return [b64(stored), etag(stored), client, col, rawClient, rawCol].join(' ');
}

const lines = fs.readFileSync(process.argv[2], 'latin1').split('\n');
const out = [];
for (const line of lines) {
    if (line !== '')
        out.push(one(line));
}
process.stdout.write(out.join('\n') + '\n');
