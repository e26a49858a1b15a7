package netdelay

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// The nfnetlink_queue protocol (include/uapi/linux/netfilter/nfnetlink_queue.h).
// github.com/florianl/go-nfqueue, which would carry these, is not served by
// the module proxy this project can reach; github.com/ti-mo/netfilter does the
// nfnetlink framing and attribute encoding, so only the few queue-specific
// numbers and fixed structs below are spelled out here.
const (
	msgPacket       netfilter.MessageType = 0 // NFQNL_MSG_PACKET
	msgVerdictBatch netfilter.MessageType = 3 // NFQNL_MSG_VERDICT_BATCH
	msgConfig       netfilter.MessageType = 2 // NFQNL_MSG_CONFIG

	attrPacketHdr  = 1 // NFQA_PACKET_HDR
	attrVerdictHdr = 2 // NFQA_VERDICT_HDR

	attrCfgCmd      = 1 // NFQA_CFG_CMD
	attrCfgParams   = 2 // NFQA_CFG_PARAMS
	attrCfgQueueMax = 3 // NFQA_CFG_QUEUE_MAXLEN
	attrCfgMask     = 4 // NFQA_CFG_MASK
	attrCfgFlags    = 5 // NFQA_CFG_FLAGS

	cfgCmdBind = 1 // NFQNL_CFG_CMD_BIND
	copyMeta   = 1 // NFQNL_COPY_META: only the id is needed, not the payload

	// NFQA_CFG_F_FAIL_OPEN: a full queue accepts at once instead of dropping,
	// so an overwhelmed delayer shows as less delay, never as loss.
	cfgFlagFailOpen = 1
	// NFQA_CFG_F_GSO: queue GSO super-packets whole instead of having the
	// kernel segment each one before queueing; the delayer never looks at
	// the payload, so it does not care, and bulk transfers cost far fewer
	// messages.
	cfgFlagGSO = 4

	verdictAccept = 1 // NF_ACCEPT
)

// configMessage binds queue to this socket and sets it up in one message, so
// that no packet can be queued before the copy mode and flags are in force.
func configMessage(queue uint16, maxLen uint32) (netlink.Message, error) {
	flags := uint32(cfgFlagFailOpen | cfgFlagGSO)
	params := make([]byte, 5) // struct nfqnl_msg_config_params is packed: be32 range, u8 mode
	params[4] = copyMeta
	return netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysQueue,
		MessageType: msgConfig,
		Family:      netfilter.ProtoUnspec,
		ResourceID:  queue,
		Flags:       netlink.Request | netlink.Acknowledge,
	}, []netfilter.Attribute{
		// struct nfqnl_msg_config_cmd: u8 command, u8 pad, be16 pf (ignored since 3.8)
		{Type: attrCfgCmd, Data: []byte{cfgCmdBind, 0, 0, unix.AF_INET}},
		{Type: attrCfgParams, Data: params},
		{Type: attrCfgQueueMax, Data: netfilter.Uint32Bytes(maxLen)},
		{Type: attrCfgMask, Data: netfilter.Uint32Bytes(flags)},
		{Type: attrCfgFlags, Data: netfilter.Uint32Bytes(flags)},
	})
}

// acceptUpToMessage accepts every packet of queue whose id is not after id.
// One batch verdict releases all packets that came due together, and also any
// packet whose notification the socket lost, which would otherwise stay
// queued forever.
func acceptUpToMessage(queue uint16, id uint32) (netlink.Message, error) {
	hdr := make([]byte, 8) // struct nfqnl_msg_verdict_hdr: be32 verdict, be32 id
	binary.BigEndian.PutUint32(hdr[0:4], verdictAccept)
	binary.BigEndian.PutUint32(hdr[4:8], id)
	return netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysQueue,
		MessageType: msgVerdictBatch,
		Family:      netfilter.ProtoUnspec,
		ResourceID:  queue,
		Flags:       netlink.Request,
	}, []netfilter.Attribute{{Type: attrVerdictHdr, Data: hdr}})
}

var errNoPacketHeader = errors.New("netdelay: queued packet message without NFQA_PACKET_HDR")

// packetID returns the id of a queued-packet message; ok is false for any
// other message (acks, errors).
func packetID(m netlink.Message) (id uint32, ok bool, err error) {
	h, ad, err := netfilter.DecodeNetlink(m)
	if err != nil {
		return 0, false, err
	}
	if h.SubsystemID != netfilter.NFSubsysQueue || h.MessageType != msgPacket {
		return 0, false, nil
	}
	for ad.Next() {
		if ad.Type() != attrPacketHdr {
			continue
		}
		b := ad.Bytes()
		if len(b) < 4 {
			return 0, false, fmt.Errorf("netdelay: NFQA_PACKET_HDR of %d bytes", len(b))
		}
		return binary.BigEndian.Uint32(b[0:4]), true, nil
	}
	if err := ad.Err(); err != nil {
		return 0, false, err
	}
	return 0, false, errNoPacketHeader
}
