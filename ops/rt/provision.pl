#!/usr/bin/perl
# Prepares a Request Tracker 5 instance for the RT sink: a queue, and the two ticket custom
# fields the sink writes (the correlation id it finds tickets by, and the CI), applied to it.
# With a user name, also the sink's own least-privilege account: a privileged user holding on
# that queue only the rights the sink needs (and on the two custom fields, seeing and setting
# them). Its password is read from the file named by RT_USER_PASSWORD_FILE (never an argument).
# Idempotent. Usage (as a user who can write RT's database):
#   perl ops/rt/provision.pl QUEUE [USER] [RT_LIB_DIR]   (RT_LIB_DIR default /usr/share/request-tracker5/lib)
use strict;
use warnings;

my $queue_name = shift or die "usage: provision.pl QUEUE [USER] [RT_LIB_DIR]\n";
my $user_name = shift;
my $lib = shift || '/usr/share/request-tracker5/lib';
unshift @INC, $lib;
require RT;
RT::LoadConfig();
RT::Init();

# What the sink does: find tickets (SeeQueue, ShowTicket), create them, set status and custom
# fields (ModifyTicket), comment (CommentOnTicket).
my @QUEUE_RIGHTS = qw(SeeQueue ShowTicket CreateTicket ModifyTicket CommentOnTicket);
my @FIELD_RIGHTS = qw(SeeCustomField ModifyCustomField);

my $queue = RT::Queue->new(RT->SystemUser);
$queue->Load($queue_name);
unless ($queue->id) {
    my ($ok, $msg) = $queue->Create(Name => $queue_name, Description => 'ITSM pipeline');
    die "cannot create queue $queue_name: $msg\n" unless $ok;
}
my @fields;
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
    push @fields, $cf;
}
print "queue $queue_name ready (id ", $queue->id, ")\n";

if ($user_name) {
    my $user = RT::User->new(RT->SystemUser);
    $user->Load($user_name);
    unless ($user->id) {
        my ($ok, $msg) = $user->Create(Name => $user_name, Privileged => 1, Comments => 'ITSM pipeline sink');
        die "cannot create user $user_name: $msg\n" unless $ok;
    }
    if (my $file = $ENV{RT_USER_PASSWORD_FILE}) {
        open(my $fh, '<', $file) or die "cannot read RT_USER_PASSWORD_FILE $file: $!\n";
        my $password = <$fh>;
        close $fh;
        chomp $password;
        my ($ok, $msg) = $user->SetPassword($password);
        die "cannot set the password of $user_name: $msg\n" unless $ok;
    }
    my $principal = $user->PrincipalObj;
    for my $right (@QUEUE_RIGHTS) {
        $principal->GrantRight(Right => $right, Object => $queue) unless $principal->HasRight(Right => $right, Object => $queue);
    }
    for my $cf (@fields) {
        for my $right (@FIELD_RIGHTS) {
            $principal->GrantRight(Right => $right, Object => $cf) unless $principal->HasRight(Right => $right, Object => $cf);
        }
    }
    print "user $user_name ready on $queue_name: ", join(', ', @QUEUE_RIGHTS, @FIELD_RIGHTS), "\n";
}
