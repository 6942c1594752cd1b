package file

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/lwm2m-gateway/gateway/pskstore"
)

// WatchFile reloads the store whenever its file changes, until ctx is done;
// it returns once watching has started, or the error that prevented it.
// Reload errors are logged (at Warn, with the line and field) and the last
// good keys stay in service; changes reach Watch as after Reload (R10).
//
// It watches the file's directory, not the file, so it sees editors that
// write a new file and rename it over the old one, and Kubernetes ConfigMap
// updates, which swap a "..data" symbolic link; when the path is a symbolic
// link it also watches the directory of its target. Bursts of events are
// coalesced (WithDebounce). A nil logger means the store's (WithLogger).
func (s *Store) WatchFile(ctx context.Context, logger *zap.Logger) error {
	if logger == nil {
		logger = s.opts.logger
	}
	abs, err := filepath.Abs(s.path)
	if err != nil {
		return fmt.Errorf("file: watch: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("file: watch: %w", err)
	}
	if err := w.Add(filepath.Dir(abs)); err != nil {
		w.Close()
		return fmt.Errorf("file: watch: %w", err)
	}
	fw := &fileWatch{s: s, w: w, log: logger.With(zap.String("path", s.path)), path: abs}
	fw.followTarget()
	go fw.run(ctx)
	return nil
}

type fileWatch struct {
	s       *Store
	w       *fsnotify.Watcher
	log     *zap.Logger
	path    string // absolute path of the key file
	target  string // resolved path when path is a symbolic link
	failing bool   // the last reload failed
}

func (fw *fileWatch) run(ctx context.Context) {
	defer fw.log.Debug("psk store: file watch stopped")
	defer fw.w.Close()
	timer := time.NewTimer(0)
	<-timer.C
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-fw.w.Events:
			if !ok {
				return
			}
			if fw.relevant(ev.Name) {
				timer.Reset(fw.s.opts.debounce)
			}
		case err, ok := <-fw.w.Errors:
			if !ok {
				return
			}
			// An overflow may hide a change of the file: reload to be sure.
			fw.log.Warn("psk store: file watch error", zap.NamedError("err", err))
			timer.Reset(fw.s.opts.debounce)
		case <-timer.C:
			fw.reload()
		}
	}
}

// relevant reports whether an event may concern the key file: the file's own
// name, a ConfigMap "..data"-style entry, or the symbolic link's target.
// Temporary files of Save (".keys.yaml.tmp-…") and unrelated files are not.
func (fw *fileWatch) relevant(name string) bool {
	base := filepath.Base(name)
	return base == filepath.Base(fw.path) || strings.HasPrefix(base, "..") || (fw.target != "" && name == fw.target)
}

// reload re-reads the file after a burst of events. A failure is logged
// once per burst, and the first good reload after failures says the file
// recovered, so an operator watching the log knows the edit took.
func (fw *fileWatch) reload() {
	defer fw.log.Debug("psk store: key file checked")
	changes, err := fw.s.reload(fw.log)
	if err != nil {
		fw.failing = true
		fw.log.Warn("psk store: reload failed, keeping the last good keys", zap.NamedError("err", err))
		return
	}
	fw.followTarget()
	if fw.failing {
		fw.failing = false
		fw.log.Info("psk store: key file recovered: it loads again", zap.Int("changes", len(changes)))
	}
	if len(changes) == 0 {
		return
	}
	var added, rotated, revoked int
	for _, c := range changes {
		switch c.Kind {
		case pskstore.Added:
			added++
		case pskstore.Rotated:
			rotated++
		case pskstore.Revoked:
			revoked++
		}
		fw.log.Debug("psk store: identity changed", zap.String("identity_tag", fw.s.opts.policy.Tagger.Tag(c.Identity)), zap.Stringer("change", c.Kind))
	}
	fw.log.Info("psk store: reloaded", zap.Int("added", added), zap.Int("rotated", rotated), zap.Int("revoked", revoked))
}

// followTarget watches the directory of the symbolic link's target too, when
// the key file is a link that leaves its directory. Watches on directories
// that later disappear are dropped by the kernel.
func (fw *fileWatch) followTarget() {
	target, err := filepath.EvalSymlinks(fw.path)
	if err != nil || target == fw.path {
		return
	}
	if target, err = filepath.Abs(target); err != nil {
		return
	}
	fw.target = target
	if dir := filepath.Dir(target); dir != filepath.Dir(fw.path) {
		if err := fw.w.Add(dir); err != nil {
			fw.log.Warn("psk store: cannot watch the key file's link target", zap.NamedError("err", err))
		}
	}
}
