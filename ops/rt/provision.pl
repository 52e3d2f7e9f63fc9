#!/usr/bin/perl
# Prepares a Request Tracker 5 instance for the RT sink: a queue, and the two ticket custom
# fields the sink writes (the correlation id it finds tickets by, and the CI), applied to it.
# Idempotent. Usage (as a user who can write RT's database):
#   perl ops/rt/provision.pl QUEUE [RT_LIB_DIR]      (RT_LIB_DIR default /usr/share/request-tracker5/lib)
use strict;
use warnings;

my $queue_name = shift or die "usage: provision.pl QUEUE [RT_LIB_DIR]\n";
my $lib = shift || '/usr/share/request-tracker5/lib';
unshift @INC, $lib;
require RT;
RT::LoadConfig();
RT::Init();

my $queue = RT::Queue->new(RT->SystemUser);
$queue->Load($queue_name);
unless ($queue->id) {
    my ($ok, $msg) = $queue->Create(Name => $queue_name, Description => 'ITSM pipeline');
    die "cannot create queue $queue_name: $msg\n" unless $ok;
}
for my $name ('ITSM Correlation Id', 'ITSM CI') {
    my $cf = RT::CustomField->new(RT->SystemUser);
    $cf->LoadByName(Name => $name, LookupType => 'RT::Queue-RT::Ticket');
    unless ($cf->id) {
        my ($ok, $msg) = $cf->Create(Name => $name, Type => 'FreeformSingle', LookupType => 'RT::Queue-RT::Ticket');
        die "cannot create custom field $name: $msg\n" unless $ok;
    }
    unless ($cf->IsAdded($queue->id)) {
        my ($ok, $msg) = $cf->AddToObject($queue);
        die "cannot apply $name to $queue_name: $msg\n" unless $ok;
    }
}
print "queue $queue_name ready (id ", $queue->id, ")\n";
