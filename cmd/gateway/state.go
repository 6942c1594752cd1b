package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/lwm2m-gateway/gateway/config"
	"github.com/lwm2m-gateway/gateway/gateway"
	"github.com/lwm2m-gateway/gateway/statestore"
	pgstate "github.com/lwm2m-gateway/gateway/statestore/postgres"
)

// Purposes of the keys derived from the store's KEK (key separation from
// the sealed PSKs and from each other).
const (
	snapshotPurpose = "gateway session snapshot v1"
	linkPurpose     = "gateway replica link v1"
)

// stateStores are where the gateway keeps what outlives the process.
type stateStores struct {
	registrations gateway.RegistrationStore // nil: in memory only
	sessions      gateway.SessionStore      // nil: sessions end with the process
	sealer        gateway.Sealer
	cluster       *pgstate.Store // nil: a single gateway
	replicaID     int
	linkSealer    gateway.Sealer
	close         func()
}

// openState opens the registrations store (a file next to the key file, or
// the PostgreSQL store's database), and, with sessions.snapshot, the
// session snapshots (a file, or that database), and the cluster. A damaged
// state file is moved aside and logged; the gateway starts without it.
func openState(c *config.Config, ks *keyStore, log *zap.Logger) (stateStores, error) {
	st := stateStores{close: func() {}}
	var pg *pgstate.Store
	switch c.Store.Type {
	case config.StoreFile:
		path := filepath.Join(filepath.Dir(c.Store.Path), "registrations.json")
		f, err := statestore.OpenRegistrations(path)
		if errors.Is(err, statestore.ErrCorrupt) {
			log.Error("registrations file damaged; devices that re-handshake will re-register", zap.Error(err))
		} else if err != nil {
			return st, err
		}
		st.registrations = f
	case config.StorePostgres:
		dsn, err := storeDSN(c.Store)
		if err != nil {
			return st, err
		}
		if c.Cluster.Enabled {
			if st.replicaID, err = replicaID(c.Cluster.ReplicaID); err != nil {
				return st, err
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), postgresOpenTimeout)
		defer cancel()
		pg, err = pgstate.Open(ctx, dsn, pgstate.WithReplica(st.replicaID))
		if err != nil {
			return st, fmt.Errorf("state store: %w", err)
		}
		st.registrations, st.close = pg, pg.Close
	}
	if c.Sessions.Snapshot == "" {
		return st, nil
	}
	if ks.kek == nil {
		return st, errors.New("sessions.snapshot: the key store has no key-encryption key to seal snapshots with")
	}
	sealer, err := ks.kek.For(snapshotPurpose)
	if err != nil {
		return st, err
	}
	st.sealer = sealer
	if c.Sessions.Snapshot == config.SnapshotPostgres {
		if pg == nil {
			return st, errors.New("sessions.snapshot: postgres needs store.type postgres")
		}
		st.sessions = pg
		if c.Cluster.Enabled {
			if st.linkSealer, err = ks.kek.For(linkPurpose); err != nil {
				return st, err
			}
			st.cluster = pg
		}
		return st, nil
	}
	f, err := statestore.OpenSnapshots(c.Sessions.Snapshot)
	if errors.Is(err, statestore.ErrCorrupt) {
		log.Error("session snapshot file damaged; devices will handshake again", zap.Error(err))
	} else if err != nil {
		return st, fmt.Errorf("sessions.snapshot: %w", err)
	}
	st.sessions = f
	return st, nil
}

// apply puts the stores into the gateway's configuration.
func (st stateStores) apply(gc *gateway.Config, c *config.Config) {
	gc.Registrations, gc.SnapshotSealer = st.registrations, st.sealer
	if st.sessions != nil {
		gc.Sessions = st.sessions
	}
	gc.CheckpointInterval = time.Duration(c.Sessions.CheckpointInterval)
	if st.cluster != nil {
		gc.Cluster, gc.ReplicaID, gc.LinkSealer = st.cluster, st.replicaID, st.linkSealer
		gc.LinkAddress, gc.LinkAdvertise = c.Cluster.LinkAddress, linkAdvertise(c.Cluster)
		gc.Lease = time.Duration(c.Cluster.Lease)
	}
}

// replicaID is cluster.replica_id, or with -1 the host name's trailing
// number (a StatefulSet's pod ordinal).
func replicaID(configured int) (int, error) {
	if configured >= 0 {
		return configured, nil
	}
	host, err := os.Hostname()
	if err != nil {
		return 0, fmt.Errorf("cluster.replica_id: %w", err)
	}
	i := strings.LastIndexFunc(host, func(r rune) bool { return r < '0' || r > '9' })
	n, err := strconv.Atoi(host[i+1:])
	if err != nil || n > 255 {
		return 0, fmt.Errorf("cluster.replica_id -1: host name %q does not end in a number 0..255; set replica_id", host)
	}
	return n, nil
}

// linkAdvertise is cluster.link_advertise, or $POD_IP with the link port.
func linkAdvertise(c config.Cluster) string {
	if c.LinkAdvertise != "" {
		return c.LinkAdvertise
	}
	if ip := os.Getenv("POD_IP"); ip != "" {
		if _, port, err := net.SplitHostPort(c.LinkAddress); err == nil {
			return net.JoinHostPort(ip, port)
		}
	}
	return ""
}

// storeDSN is store.dsn, or the value of the variable store.dsn_env names.
func storeDSN(c config.Store) (string, error) {
	if c.DSNEnv == "" {
		return c.DSN, nil
	}
	dsn := os.Getenv(c.DSNEnv)
	if dsn == "" {
		return "", fmt.Errorf("store.dsn_env: environment variable %s is not set", c.DSNEnv)
	}
	return dsn, nil
}
