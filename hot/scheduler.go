package hot

import (
	"container/heap"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Scheduler runs the background work of many logs - sealing rolled
// segments, interval flushes, age rolls and retention - on goroutines shared
// by all of them, so an idle partition costs no goroutine of its own (a
// goroutine per log made 10,000 idle partitions hold 10,000 goroutines and
// wake 15% of a core).
//
// One dispatcher goroutine keeps the logs in a heap ordered by when each is
// next due and sleeps until the first one is; it hands due logs to Workers
// worker goroutines, one job per log at a time. A roll asks for the log to
// run at once, so sealing starts promptly. The dispatcher and the workers
// run only while logs are registered: a scheduler with no open logs holds no
// goroutine at all, one with any holds 1 + Workers.
type Scheduler struct {
	workers int
	wake    chan struct{} // the heap changed: recompute the sleep

	mu       sync.Mutex
	jobDone  *sync.Cond // a job finished (Log.Close waits for its own)
	due      logHeap
	logs     int // registered
	looping  bool
	loopDone chan struct{}
	closed   bool
}

// SchedulerOptions configure a Scheduler.
type SchedulerOptions struct {
	// Workers bounds how many logs run background work at once; a job may
	// fsync a whole segment and write its indexes. 0 means 4.
	Workers int
}

// NewScheduler returns a scheduler for the logs of one owner (a broker).
// Pass it in Options.Scheduler and Close it after closing those logs.
func NewScheduler(o SchedulerOptions) *Scheduler {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	s := &Scheduler{workers: o.Workers, wake: make(chan struct{}, 1)}
	s.jobDone = sync.NewCond(&s.mu)
	return s
}

// Close refuses new logs and waits for the dispatcher to stop. Every log
// using the scheduler must be closed first.
func (s *Scheduler) Close() error {
	s.mu.Lock()
	s.closed = true
	n, done := s.logs, s.loopDone
	s.mu.Unlock()
	if n > 0 {
		return fmt.Errorf("hot: scheduler closed with %d logs still open", n)
	}
	if done != nil {
		<-done
	}
	return nil
}

// schedSlot is a log's place in its scheduler, guarded by Scheduler.mu.
type schedSlot struct {
	index      int       // in the heap; -1 when not in it
	due        time.Time // when the log next needs a job
	running    bool      // a job for the log is under way (or about to start)
	again      bool      // kicked while running: run again at once
	registered bool
}

var errSchedulerClosed = errors.New("hot: scheduler closed")

// coalesce is how early a log's periodic work may run so that it shares a
// wake-up with others. Work that must not run early checks the time itself
// (an age roll compares the segment's age), and a flush that runs early
// only makes data durable sooner.
const coalesce = 20 * time.Millisecond

func (s *Scheduler) register(l *Log, due time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errSchedulerClosed
	}
	l.slot = schedSlot{index: -1, due: due, registered: true}
	heap.Push(&s.due, l)
	s.logs++
	if !s.looping {
		s.looping = true
		s.loopDone = make(chan struct{})
		go s.loop(s.loopDone)
	}
	s.signal()
	return nil
}

// unregister takes l off the scheduler and waits for its job, if one runs.
func (s *Scheduler) unregister(l *Log) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !l.slot.registered {
		return
	}
	l.slot.registered = false
	if l.slot.index >= 0 {
		heap.Remove(&s.due, l.slot.index)
	}
	for l.slot.running {
		s.jobDone.Wait()
	}
	s.logs--
	s.signal() // the dispatcher stops when no log is left
}

// kick asks for a job for l now (a segment rolled and waits to be sealed).
// It may be called with l.mu held: the scheduler never takes l.mu while
// holding its own lock.
func (s *Scheduler) kick(l *Log) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !l.slot.registered:
	case l.slot.running:
		l.slot.again = true
	default:
		l.slot.due = time.Time{}
		heap.Fix(&s.due, l.slot.index)
		s.signal()
	}
}

func (s *Scheduler) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// loop is the dispatcher: it sleeps until the first log is due, then starts
// a job for every due log, never more than Workers at once.
func (s *Scheduler) loop(done chan struct{}) {
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range s.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				s.run(j.l, j.at)
			}
		}()
	}
	defer func() {
		close(jobs)
		wg.Wait()
		close(done)
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.logs == 0 {
			s.looping = false
			s.mu.Unlock()
			return
		}
		now := time.Now()
		var ready []job
		// Logs due within the next coalesce window run now too, as of
		// their due time: with thousands of logs, one wake-up serves many
		// instead of one each.
		for len(s.due) > 0 && !s.due[0].slot.due.After(now.Add(coalesce)) {
			l := heap.Pop(&s.due).(*Log)
			l.slot.running = true
			ready = append(ready, job{l: l, at: later(now, l.slot.due)})
		}
		var sleep <-chan time.Time
		if len(ready) == 0 && len(s.due) > 0 {
			timer.Reset(s.due[0].slot.due.Sub(now))
			sleep = timer.C
		}
		s.mu.Unlock()
		for _, j := range ready {
			jobs <- j // waits while every worker is busy
		}
		if len(ready) > 0 {
			continue
		}
		select {
		case <-s.wake:
		case <-sleep:
		}
		timer.Stop()
	}
}

// run does l's due work and puts it back in the heap at its next due time.
func (s *Scheduler) run(l *Log, at time.Time) {
	next := l.runBackground(at)
	s.mu.Lock()
	defer s.mu.Unlock()
	l.slot.running = false
	if l.slot.registered {
		if l.slot.again {
			next, l.slot.again = time.Time{}, false
		}
		l.slot.due = next
		heap.Push(&s.due, l)
		if l.slot.index == 0 {
			s.signal() // due before what the dispatcher sleeps for
		}
	}
	s.jobDone.Broadcast()
}

// job is one run of a log's background work, as of time at (its due time
// when the dispatcher runs it a little early to share a wake-up).
type job struct {
	l  *Log
	at time.Time
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// logHeap orders logs by when they are next due.
type logHeap []*Log

func (h logHeap) Len() int           { return len(h) }
func (h logHeap) Less(i, j int) bool { return h[i].slot.due.Before(h[j].slot.due) }
func (h logHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].slot.index, h[j].slot.index = i, j
}
func (h *logHeap) Push(x any) {
	l := x.(*Log)
	l.slot.index = len(*h)
	*h = append(*h, l)
}
func (h *logHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	l.slot.index = -1
	return l
}
