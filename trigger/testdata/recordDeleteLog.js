function recordDeleteLog(req, cb) {
    var microtime = require('microtime');
    var crc = require('crc');

    var log = req.log;
    log.debug({
        id: req.id,
        bucket: req.bucket,
        key: req.key,
        value: req.value,
        headers: req.headers
    }, 'recordDeleteLog entered.');
    var prevmd = req.headers['x-muskie-prev-metadata'];
    if (!prevmd || !prevmd.objectId) {
        log.debug('not logging without previous metadata');
        cb();
        return;
    }
    var prevObjectId = prevmd.objectId;

    if (req.value && req.value.objectId &&
        prevObjectId === req.value.objectId) {
        log.debug('not logging since object === prev object');
        cb();
        return;
    }
    log.debug('object ' + prevObjectId + ' is candidate for deletion.');

    // now log to the manta_delete_log table or the manta_fastdelete_queue...
    var now = Math.round((microtime.now() / 1000));
    var _key = '/' + prevObjectId + '/' + now;
    var _value = JSON.stringify(prevmd);
    var _etag = crc.hex32(crc.crc32(_value));
    var _mtime = now;
    var sql = '';
    var values = [];

    // If snaplinks are disabled use the fastdelete_queue rather than delete_log
    if (req.headers['x-muskie-snaplinks-disabled']) {
        log.debug('object ' + prevObjectId + ' being added to fastdelete.');
        sql = 'INSERT INTO manta_fastdelete_queue (_key, _value, _etag, ' +
            '_mtime) VALUES ($1, $2, $3, $4)';
        values = [prevObjectId, _value, _etag, _mtime];
    } else {
        sql = 'INSERT INTO manta_delete_log (_key, _value, _etag, ' +
            '_mtime, objectId) VALUES ($1, $2, $3, $4, $5)';
        values = [_key, _value, _etag, _mtime, prevObjectId];
    }

    // execute
    var q = req.pg.query(sql, values);
    q.once('error', function (err) {
        log.debug(err, 'manta delete log insert: failed');
        cb(err);
    });
    q.once('end', function () {
        log.debug('manta delete log insert: done');
        cb();
    });
}
